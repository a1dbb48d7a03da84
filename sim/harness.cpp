// Bulk Verilator harness for a design with one valid/ready input stream and one output stream
// (the accelerator top). Moves whole transactions in C++, so whole test sets run at millions of
// simulated cycles per second. Built by bitswarm.sim.bulk with -DIN_BYTES=... -DOUT_BYTES=...
//
// usage: Vtop IN_FILE OUT_FILE N_ITEMS SLICES_PER_ITEM MODE(0=isolated,1=stream) IDLE_PCT BP_PCT SEED MAX_CYCLES
// IN_FILE: N_ITEMS * SLICES_PER_ITEM records of IN_BYTES (little-endian payload bits).
// OUT_FILE: N_ITEMS records of OUT_BYTES payload + uint64 first-input cycle + uint64 output cycle.
// stdout: one line "cycles=<n> seconds=<s>".
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "Vtop.h"
#include "harness_common.h"

int main(int argc, char** argv) {
    if (argc != 10) {
        fprintf(stderr, "usage: %s IN OUT N SLICES MODE IDLE_PCT BP_PCT SEED MAX_CYCLES\n", argv[0]);
        return 2;
    }
    const long n_items = atol(argv[3]), slices = atol(argv[4]);
    const int mode = atoi(argv[5]), idle = atoi(argv[6]), bp = atoi(argv[7]);
    rng_state = strtoull(argv[8], nullptr, 10) * 0x9E3779B97F4A7C15ULL + 1;
    const uint64_t max_cycles = strtoull(argv[9], nullptr, 10);
    std::vector<uint8_t> in((size_t)n_items * slices * IN_BYTES);
    FILE* f = fopen(argv[1], "rb");
    if (!f || fread(in.data(), 1, in.size(), f) != in.size()) {
        fprintf(stderr, "cannot read %s\n", argv[1]);
        return 2;
    }
    fclose(f);
    const size_t rec = OUT_BYTES + 16;
    std::vector<uint8_t> out((size_t)n_items * rec, 0);
    std::vector<uint64_t> first_in(n_items, 0);

    VerilatedContext ctx;
    Vtop top{&ctx};
    reset_top(top);

    long sent = 0, got = 0;  // slices sent, items received
    const long total_slices = n_items * slices;
    uint64_t cycle = 0;
    auto t0 = std::chrono::steady_clock::now();
    while (got < n_items && cycle < max_cycles) {
        const long item = sent / slices;
        bool offer = sent < total_slices && (mode == 1 || item == got) && !(idle && (int)(rnd() % 100) < idle);
        top.I_VALID = offer;
        if (offer) put(top.I_PAYLOAD, &in[(size_t)sent * IN_BYTES], IN_BYTES);
        top.O_READY = !(bp && (int)(rnd() % 100) < bp);
        top.clk = 0;
        top.eval();
        if (top.I_VALID && top.I_READY) {
            if (sent % slices == 0) first_in[item] = cycle;
            sent++;
        }
        if (top.O_VALID && top.O_READY) {
            uint8_t* r = &out[(size_t)got * rec];
            get(top.O_PAYLOAD, r, OUT_BYTES);
            memcpy(r + OUT_BYTES, &first_in[got], 8);
            memcpy(r + OUT_BYTES + 8, &cycle, 8);
            got++;
        }
        top.clk = 1;
        top.eval();
        cycle++;
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    top.final();
    f = fopen(argv[2], "wb");
    if (!f || fwrite(out.data(), 1, out.size(), f) != out.size()) {
        fprintf(stderr, "cannot write %s\n", argv[2]);
        return 2;
    }
    fclose(f);
    printf("cycles=%llu seconds=%.6f items=%ld\n", (unsigned long long)cycle, secs, got);
    return got == n_items ? 0 : 3;
}
