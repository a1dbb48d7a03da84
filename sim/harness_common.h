// Helpers shared by the bulk Verilator harnesses (harness.cpp, harness_onchip.cpp): a
// deterministic xorshift64* for idle/backpressure patterns, byte <-> port copies for
// narrow (<= 64-bit) and wide (VlWide) ports, little-endian, the reset sequence, the
// streaming loop's clock cycle (Stream) and the optional waveform dump (Waves). Needs
// -DIN_BYTES=... -DOUT_BYTES=...; -DBITSWARM_WAVES_VCD (Verilator --trace) or
// -DBITSWARM_WAVES_FST (--trace-fst) compiles the dump in.
#pragma once
#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <vector>

#include "verilated.h"
#if defined(BITSWARM_WAVES_FST)
#include "verilated_fst_c.h"
typedef VerilatedFstC WaveFile;
#elif defined(BITSWARM_WAVES_VCD)
#include "verilated_vcd_c.h"
typedef VerilatedVcdC WaveFile;
#endif

// Verilator escapes the double underscore of Amaranth's port names ("i_stream__valid").
#define I_VALID i_stream___05Fvalid
#define I_READY i_stream___05Fready
#define I_PAYLOAD i_stream___05Fpayload
#define O_VALID o_stream___05Fvalid
#define O_READY o_stream___05Fready
#define O_PAYLOAD o_stream___05Fpayload

static uint64_t rng_state = 1;
static inline uint32_t rnd() {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ULL) >> 32);
}

template <typename T>
static void put(T& sig, const uint8_t* b, int n) {
    uint64_t v = 0;
    memcpy(&v, b, n < 8 ? n : 8);
    sig = (T)v;
}
template <std::size_t W>
static void put(VlWide<W>& sig, const uint8_t* b, int n) {
    for (std::size_t i = 0; i < W; i++) {
        uint32_t w = 0;
        int off = (int)(4 * i), k = n - off;
        if (k > 0) memcpy(&w, b + off, k < 4 ? k : 4);
        sig[i] = w;
    }
}
template <typename T>
static void get(const T& sig, uint8_t* b, int n) {
    uint64_t v = (uint64_t)sig;
    memcpy(b, &v, n < 8 ? n : 8);
}
template <std::size_t W>
static void get(const VlWide<W>& sig, uint8_t* b, int n) {
    for (std::size_t i = 0; i < W; i++) {
        uint32_t w = sig[i];
        int off = (int)(4 * i), k = n - off;
        if (k > 0) memcpy(b + off, &w, k < 4 ? k : 4);
    }
}

// Whole-file I/O; false on any error.
static bool read_file(const char* path, std::vector<uint8_t>& buf) {
    FILE* f = fopen(path, "rb");
    if (!f) return false;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf.resize((size_t)n);
    bool ok = fread(buf.data(), 1, buf.size(), f) == buf.size();
    fclose(f);
    return ok;
}

static bool write_file(const char* path, const std::vector<uint8_t>& buf) {
    FILE* f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fwrite(buf.data(), 1, buf.size(), f) == buf.size();
    return fclose(f) == 0 && ok;
}

// Waveform dump: every signal, one sample after each eval() (two per clock cycle, one time
// unit apart). A no-op unless the build traces (see the top of this file).
struct Waves {
#if defined(BITSWARM_WAVES_FST) || defined(BITSWARM_WAVES_VCD)
    static constexpr bool built_in = true;
    WaveFile* file = nullptr;
    uint64_t t = 0;
    // before the model is constructed
    static void enable(VerilatedContext& ctx) { ctx.traceEverOn(true); }
    template <typename Top>
    bool open(Top& top, const char* path) {
        file = new WaveFile;
        top.trace(file, 99);
        file->open(path);
        return file->isOpen();
    }
    void dump() {
        if (file) file->dump(t++);
    }
    void close() {
        if (file) {
            file->close();
            delete file;
            file = nullptr;
        }
    }
#else
    static constexpr bool built_in = false;
    static void enable(VerilatedContext&) {}
    template <typename Top>
    bool open(Top&, const char*) { return false; }
    void dump() {}
    void close() {}
#endif
};
static Waves waves;

// Reset: hold rst for two clock cycles with both streams idle, then release it.
template <typename Top>
static void reset_top(Top& top) {
    top.clk = 0;
    top.rst = 1;
    top.I_VALID = 0;
    top.O_READY = 0;
    for (int i = 0; i < 4; i++) {
        top.clk = !top.clk;
        top.eval();
        waves.dump();
    }
    top.rst = 0;
}

// The streaming side of a run, shared by the harnesses: input slices of IN_BYTES go in on
// I_VALID/I_READY, records come out on O_VALID/O_READY. Each output record is the payload
// (OUT_BYTES), the cycle its item's first slice was accepted and the cycle it came out (8 bytes
// each, little-endian).
struct Stream {
    static constexpr size_t REC = OUT_BYTES + 16;
    const uint8_t* in;
    long slices;  // input slices per item
    int bp;       // % of cycles with O_READY low
    std::vector<uint8_t> out;
    std::vector<uint64_t> first_in;
    long sent = 0, got = 0;  // slices sent, items received
    uint64_t cycle = 0;

    Stream(const uint8_t* in_, long n_items, long slices_, int bp_)
        : in(in_), slices(slices_), bp(bp_), out((size_t)n_items * REC, 0), first_in(n_items, 0) {}

    // One clock cycle: offer slice `sent` if `offer`, record the handshakes, clock edge.
    template <typename Top>
    void step(Top& top, bool offer) {
        top.I_VALID = offer;
        if (offer) put(top.I_PAYLOAD, &in[(size_t)sent * IN_BYTES], IN_BYTES);
        top.O_READY = !(bp && (int)(rnd() % 100) < bp);
        top.clk = 0;
        top.eval();
        waves.dump();
        if (top.I_VALID && top.I_READY) {
            if (sent % slices == 0) first_in[sent / slices] = cycle;
            sent++;
        }
        if (top.O_VALID && top.O_READY) {
            uint8_t* r = &out[(size_t)got * REC];
            get(top.O_PAYLOAD, r, OUT_BYTES);
            memcpy(r + OUT_BYTES, &first_in[got], 8);
            memcpy(r + OUT_BYTES + 8, &cycle, 8);
            got++;
        }
        top.clk = 1;
        top.eval();
        waves.dump();
        cycle++;
    }
};
