// Function multi-versioning for the hot loops: the wheel targets baseline x86-64, but a function
// marked NDT_MULTIVERSION also gets an AVX2+FMA clone picked at load time (GCC ifunc), so the
// same binary runs everywhere and vectorises 4-wide with FMA where the CPU allows.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(NDT_NO_MULTIVERSION)
#define NDT_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define NDT_MULTIVERSION
#endif
