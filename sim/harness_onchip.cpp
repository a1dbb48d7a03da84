// Bulk Verilator harness for the on-chip trainer (bitswarm.hw.onchip.OnChipTrainer): streams
// training samples through i_stream, collects one o_stream record per sample, then reads the
// trained state back through the debug port. Built by bitswarm.sim.bulk with
// -DIN_BYTES=... -DOUT_BYTES=... -DDBG_BYTES=...
//
// usage: Vtop IN OUT N SLICES IDLE_PCT BP_PCT SEED MAX_CYCLES DBG_IN DBG_OUT
// IN: N * SLICES records of IN_BYTES (i_stream payload bits, little-endian).
// OUT: N records of OUT_BYTES payload + uint64 first-input cycle + uint64 output cycle.
// DBG_IN: uint32 quadruples (kind, layer, row, word); DBG_OUT: one DBG_BYTES record per query.
// stdout: "cycles=<n> seconds=<s> items=<n>".
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "Vtop.h"
#include "harness_common.h"

int main(int argc, char** argv) {
    if (argc != 11) {
        fprintf(stderr, "usage: %s IN OUT N SLICES IDLE_PCT BP_PCT SEED MAX_CYCLES DBG_IN DBG_OUT\n", argv[0]);
        return 2;
    }
    const long n_items = atol(argv[3]), slices = atol(argv[4]);
    const int idle = atoi(argv[5]), bp = atoi(argv[6]);
    rng_state = strtoull(argv[7], nullptr, 10) * 0x9E3779B97F4A7C15ULL + 1;
    const uint64_t max_cycles = strtoull(argv[8], nullptr, 10);
    std::vector<uint8_t> in, dbg_in;
    if (!read_file(argv[1], in) || in.size() != (size_t)n_items * slices * IN_BYTES) {
        fprintf(stderr, "cannot read %s (or wrong size)\n", argv[1]);
        return 2;
    }
    if (!read_file(argv[9], dbg_in) || dbg_in.size() % 16) {
        fprintf(stderr, "cannot read %s (or wrong size)\n", argv[9]);
        return 2;
    }
    VerilatedContext ctx;
    Vtop top{&ctx};
    top.dbg_en = 0;
    reset_top(top);

    Stream st(in.data(), n_items, slices, bp);
    const long total = n_items * slices;
    auto t0 = std::chrono::steady_clock::now();
    while (st.got < n_items && st.cycle < max_cycles)
        st.step(top, st.sent < total && !(idle && (int)(rnd() % 100) < idle));
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    top.I_VALID = 0;
    top.O_READY = 1;
    // wait until the trainer is idle, then read the state back (one cycle per read)
    for (int i = 0; i < 1000000 && !top.idle; i++) {
        top.clk = 0;
        top.eval();
        top.clk = 1;
        top.eval();
    }
    if (!top.idle) {
        fprintf(stderr, "trainer never went idle\n");
        return 3;
    }
    const size_t n_dbg = dbg_in.size() / 16;
    std::vector<uint8_t> dbg_out(n_dbg * DBG_BYTES, 0);
    for (size_t i = 0; i < n_dbg; i++) {
        uint32_t q[4];
        memcpy(q, &dbg_in[i * 16], 16);
        top.dbg_en = 1;
        top.dbg_kind = q[0];
        top.dbg_layer = q[1];
        top.dbg_row = q[2];
        top.dbg_word = q[3];
        top.clk = 0;
        top.eval();
        top.clk = 1;
        top.eval();
        top.dbg_en = 0;
        top.clk = 0;
        top.eval();
        get(top.dbg_data, &dbg_out[i * DBG_BYTES], DBG_BYTES);
    }
    top.final();
    if (!write_file(argv[2], st.out) || !write_file(argv[10], dbg_out)) {
        fprintf(stderr, "cannot write outputs\n");
        return 2;
    }
    printf("cycles=%llu seconds=%.6f items=%ld\n", (unsigned long long)st.cycle, secs, st.got);
    return st.got == n_items ? 0 : 3;
}
