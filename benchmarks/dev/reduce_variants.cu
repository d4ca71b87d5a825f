// Which shape of elementwise kernel reaches the copy rate on this GPU?
// float32 dst = a + b over 256 MiB buffers, several kernel shapes, each
// timed with CUDA events (median of 20) beside cudaMemcpy device-to-device.
// Bytes: 3 x buffer for the sum, 2 x buffer for the copy.
//   nvcc -O3 -std=c++17 -arch=sm_90 benchmarks/dev/reduce_variants.cu -o /tmp/rv && /tmp/rv
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { std::printf("%s: %s\n", #x, cudaGetErrorString(e)); return 1; } } while (0)

enum Load { kPlain, kStream, kNc };

template <Load L>
__device__ __forceinline__ float4 ld(const float4* p) {
  if constexpr (L == kStream) return __ldcs(p);
  else if constexpr (L == kNc) return __ldg(p);
  else return *p;
}

__device__ __forceinline__ float4 add4(float4 x, float4 y) {
  return make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
}

// One tile of T x U vectors per block step; blocks stride by the grid.
template <int T, int U, Load L, bool StreamStore>
__global__ void __launch_bounds__(T) tiled(float4* d, const float4* a, const float4* b, long n) {
  constexpr long kTile = long(T) * U;
  for (long t0 = long(blockIdx.x) * kTile; t0 < n; t0 += long(gridDim.x) * kTile) {
    float4 x[U], y[U];
    const long base = t0 + threadIdx.x;
#pragma unroll
    for (int k = 0; k < U; ++k) {
      long i = base + k * T;
      if (i < n) { x[k] = ld<L>(a + i); y[k] = ld<L>(b + i); }
    }
#pragma unroll
    for (int k = 0; k < U; ++k) {
      long i = base + k * T;
      if (i < n) {
        float4 r = add4(x[k], y[k]);
        if constexpr (StreamStore) __stcs(d + i, r); else d[i] = r;
      }
    }
  }
}

// Thread-contiguous: each thread takes U consecutive vectors.
template <int T, int U, Load L>
__global__ void __launch_bounds__(T) contiguous(float4* d, const float4* a, const float4* b, long n) {
  for (long t0 = (long(blockIdx.x) * T + threadIdx.x) * U; t0 < n; t0 += long(gridDim.x) * T * U) {
    float4 x[U], y[U];
#pragma unroll
    for (int k = 0; k < U; ++k) if (t0 + k < n) { x[k] = ld<L>(a + t0 + k); y[k] = ld<L>(b + t0 + k); }
#pragma unroll
    for (int k = 0; k < U; ++k) if (t0 + k < n) d[t0 + k] = add4(x[k], y[k]);
  }
}

using Kern = void (*)(float4*, const float4*, const float4*, long);

struct Variant {
  const char* name;
  Kern k;
  int threads, unroll;
  int gridMode;  // 0: one tile per block; k>0: k blocks per SM
};

int main() {
  const size_t bytes = 256ull << 20;
  const long n = long(bytes / 16);
  float4 *a, *b, *d;
  CK(cudaMalloc(&a, bytes));
  CK(cudaMalloc(&b, bytes));
  CK(cudaMalloc(&d, bytes));
  CK(cudaMemset(a, 0, bytes));
  CK(cudaMemset(b, 0, bytes));
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  auto median = [&](auto&& launch) {
    std::vector<float> t;
    for (int i = 0; i < 3; ++i) launch();
    for (int i = 0; i < 20; ++i) {
      cudaEventRecord(e0);
      launch();
      cudaEventRecord(e1);
      cudaEventSynchronize(e1);
      float ms = 0;
      cudaEventElapsedTime(&ms, e0, e1);
      t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  };
  const float copyMs = median([&] { cudaMemcpyAsync(d, a, bytes, cudaMemcpyDeviceToDevice); });
  const double copyGBs = 2.0 * bytes / (copyMs * 1e6);
  std::printf("{\"sms\": %d, \"copy_GBps\": %.1f, \"rows\": [\n", sms, copyGBs);
  Variant vs[] = {
      {"tiled256x4 ldcs 1tile", tiled<256, 4, kStream, false>, 256, 4, 0},
      {"tiled256x4 plain 1tile", tiled<256, 4, kPlain, false>, 256, 4, 0},
      {"tiled256x4 ldg 1tile", tiled<256, 4, kNc, false>, 256, 4, 0},
      {"tiled256x4 ldcs+stcs 1tile", tiled<256, 4, kStream, true>, 256, 4, 0},
      {"tiled128x4 plain 1tile", tiled<128, 4, kPlain, false>, 128, 4, 0},
      {"tiled128x2 plain 1tile", tiled<128, 2, kPlain, false>, 128, 2, 0},
      {"tiled256x2 plain 1tile", tiled<256, 2, kPlain, false>, 256, 2, 0},
      {"tiled512x2 plain 1tile", tiled<512, 2, kPlain, false>, 512, 2, 0},
      {"tiled256x8 plain 1tile", tiled<256, 8, kPlain, false>, 256, 8, 0},
      {"tiled256x4 ldcs 4/SM", tiled<256, 4, kStream, false>, 256, 4, 4},
      {"tiled256x4 plain 8/SM", tiled<256, 4, kPlain, false>, 256, 4, 8},
      {"tiled128x4 plain 16/SM", tiled<128, 4, kPlain, false>, 128, 4, 16},
      {"contig128x4 plain 1tile", contiguous<128, 4, kPlain>, 128, 4, 0},
      {"contig128x2 plain 1tile", contiguous<128, 2, kPlain>, 128, 2, 0},
      {"contig256x4 ldcs 1tile", contiguous<256, 4, kStream>, 256, 4, 0},
  };
  bool first = true;
  for (const Variant& v : vs) {
    const long tile = long(v.threads) * v.unroll;
    const long grid = v.gridMode == 0 ? (n + tile - 1) / tile : long(sms) * v.gridMode;
    const float ms = median([&] { v.k<<<unsigned(grid), v.threads>>>(d, a, b, n); });
    CK(cudaGetLastError());
    const double gbs = 3.0 * bytes / (ms * 1e6);
    std::printf("%s {\"variant\": \"%s\", \"grid\": %ld, \"GBps\": %.1f, \"fraction_of_copy\": %.3f}",
                first ? "" : ",\n", v.name, grid, gbs, gbs / copyGBs);
    first = false;
  }
  std::printf("\n]}\n");
  return 0;
}
