// Helpers shared by the bulk Verilator harnesses (harness.cpp, harness_onchip.cpp): a
// deterministic xorshift64* for idle/backpressure patterns and byte <-> port copies for
// narrow (<= 64-bit) and wide (VlWide) ports, little-endian.
#pragma once
#include <cstdint>
#include <cstring>

#include "verilated.h"

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
    }
    top.rst = 0;
}
