// Bulk Verilator harness for a design with one valid/ready input stream and one output stream
// (the accelerator top). Moves whole transactions in C++, so whole test sets run at millions of
// simulated cycles per second. Built by bitswarm.sim.bulk with -DIN_BYTES=... -DOUT_BYTES=...
//
// usage: Vtop IN_FILE OUT_FILE N_ITEMS SLICES_PER_ITEM MODE(0=isolated,1=stream) IDLE_PCT BP_PCT SEED MAX_CYCLES [WAVE_FILE]
// IN_FILE: N_ITEMS * SLICES_PER_ITEM records of IN_BYTES (little-endian payload bits).
// OUT_FILE: N_ITEMS records of OUT_BYTES payload + uint64 first-input cycle + uint64 output cycle.
// WAVE_FILE: waveform of the whole run (VCD or FST; only in builds with -DBITSWARM_WAVES_*).
// stdout: one line "cycles=<n> seconds=<s>".
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "Vtop.h"
#include "harness_common.h"

int main(int argc, char** argv) {
    if (argc != 10 && argc != 11) {
        fprintf(stderr, "usage: %s IN OUT N SLICES MODE IDLE_PCT BP_PCT SEED MAX_CYCLES [WAVE_FILE]\n", argv[0]);
        return 2;
    }
    const long n_items = atol(argv[3]), slices = atol(argv[4]);
    const int mode = atoi(argv[5]), idle = atoi(argv[6]), bp = atoi(argv[7]);
    rng_state = strtoull(argv[8], nullptr, 10) * 0x9E3779B97F4A7C15ULL + 1;
    const uint64_t max_cycles = strtoull(argv[9], nullptr, 10);
    std::vector<uint8_t> in;
    if (!read_file(argv[1], in) || in.size() != (size_t)n_items * slices * IN_BYTES) {
        fprintf(stderr, "cannot read %s (or wrong size)\n", argv[1]);
        return 2;
    }

    VerilatedContext ctx;
    Waves::enable(ctx);
    Vtop top{&ctx};
    if (argc == 11 && !waves.open(top, argv[10])) {
        if (Waves::built_in)
            fprintf(stderr, "cannot write %s\n", argv[10]);
        else
            fprintf(stderr, "this build has no waveform support (%s)\n", argv[10]);
        return 2;
    }
    reset_top(top);

    Stream st(in.data(), n_items, slices, bp);
    const long total_slices = n_items * slices;
    auto t0 = std::chrono::steady_clock::now();
    while (st.got < n_items && st.cycle < max_cycles) {
        const long item = st.sent / slices;
        bool offer = st.sent < total_slices && (mode == 1 || item == st.got) &&
                     !(idle && (int)(rnd() % 100) < idle);
        st.step(top, offer);
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    top.final();
    waves.close();
    if (!write_file(argv[2], st.out)) {
        fprintf(stderr, "cannot write %s\n", argv[2]);
        return 2;
    }
    printf("cycles=%llu seconds=%.6f items=%ld\n", (unsigned long long)st.cycle, secs, st.got);
    return st.got == n_items ? 0 : 3;
}
