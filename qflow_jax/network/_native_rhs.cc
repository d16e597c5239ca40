// The network Lindbladian's right-hand side on the CPU, for a Hermitian rho.
//
// X = d[r] rho + sum_f c_f[r] rho[r ^ f, :] + (jumps + swaps) / 2 is built one row at
// a time (every term reads whole rows of rho), then out = X + X^dag in place, by
// pairs of 32 x 32 tiles. With rho = rho^dag, X^dag carries the column side of
// -i Heff rho + i rho Heff^dag, and the Hermitian jump and swap terms come out whole.
#include <algorithm>
#include <atomic>
#include <complex>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>

#ifdef __linux__
#include <sched.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using cd = std::complex<double>;

namespace {

// o[i] += k * s[i], i < len (complex product written out: no NaN branch).
inline void axpy(double* __restrict__ o, cd k, const double* __restrict__ s,
                 int64_t len) {
  const double kr = k.real(), ki = k.imag();
  for (int64_t i = 0; i < 2 * len; i += 2) {
    o[i] += kr * s[i] - ki * s[i + 1];
    o[i + 1] += kr * s[i + 1] + ki * s[i];
  }
}

// o[i] += w * s[i], w real.
inline void raxpy(double* __restrict__ o, double w, const double* __restrict__ s,
                  int64_t len) {
  for (int64_t i = 0; i < 2 * len; ++i) o[i] += w * s[i];
}

// Column permutations with runs shorter than a chunk of W entries are done chunk by
// chunk with the in-chunk permutation a compile-time constant, so that they compile
// to vector shuffles instead of one-entry loops (2-9x faster at n = 8).
constexpr int64_t W = 8;

// o[c] += k_{bit(c)} * s[c ^ a] for one chunk of W entries, bit = c & M, a = 0 or M.
template <int64_t M, bool FLIP>
inline void jump_chunk(double* __restrict__ o, const double* kr, const double* ki,
                       const double* __restrict__ s) {
  double t[2 * W];
  for (int64_t i = 0; i < W; ++i) {
    const int64_t p = FLIP ? i ^ M : i;
    t[2 * i] = s[2 * p];
    t[2 * i + 1] = s[2 * p + 1];
  }
  for (int64_t i = 0; i < W; ++i) {
    o[2 * i] += kr[i] * t[2 * i] - ki[i] * t[2 * i + 1];
    o[2 * i + 1] += kr[i] * t[2 * i + 1] + ki[i] * t[2 * i];
  }
}

template <int64_t M, bool FLIP>
void jump_small(double* __restrict__ o, cd k0, cd k1, const double* __restrict__ s,
                int64_t n_cols) {
  double kr[W], ki[W];
  for (int64_t i = 0; i < W; ++i) {
    const cd k = (i & M) ? k1 : k0;
    kr[i] = k.real();
    ki[i] = k.imag();
  }
  for (int64_t b = 0; b < n_cols; b += W)
    jump_chunk<M, FLIP>(o + 2 * b, kr, ki, s + 2 * b);
}

// Jump column side: o[c] += k_{bit(c)} * s[c ^ (flip ? m : 0)], bit(c) = c & m.
void jump_cols(double* __restrict__ o, cd k0, cd k1, const double* __restrict__ s,
               int64_t n_cols, int64_t m, bool flip) {
  if (m < W && n_cols >= W) {
    switch (m * 2 + flip) {
      case 2: return jump_small<1, false>(o, k0, k1, s, n_cols);
      case 3: return jump_small<1, true>(o, k0, k1, s, n_cols);
      case 4: return jump_small<2, false>(o, k0, k1, s, n_cols);
      case 5: return jump_small<2, true>(o, k0, k1, s, n_cols);
      case 8: return jump_small<4, false>(o, k0, k1, s, n_cols);
      case 9: return jump_small<4, true>(o, k0, k1, s, n_cols);
    }
  }
  const int64_t a = flip ? m : 0;
  const bool z0 = k0 == cd(0), z1 = k1 == cd(0);
  for (int64_t b = 0; b < n_cols; b += 2 * m) {
    if (!z0) axpy(o + 2 * b, k0, s + 2 * (b + a), m);
    if (!z1) axpy(o + 2 * (b + m), k1, s + 2 * (b + m - a), m);
  }
}

// The swap of bits ma < mb as an index map.
constexpr int64_t swapped(int64_t c, int64_t ma, int64_t mb) {
  return ((c & ma) != 0) != ((c & mb) != 0) ? c ^ (ma | mb) : c;
}

// o += w * s[p(.)] chunk by chunk, for MB < W: the permutation stays inside a chunk.
template <int64_t MA, int64_t MB>
void swap_small(double* __restrict__ o, double w, const double* __restrict__ s,
                int64_t n_cols) {
  double t[2 * W];
  for (int64_t b = 0; b < n_cols; b += W) {
    for (int64_t i = 0; i < W; ++i) {
      const int64_t p = swapped(i, MA, MB);
      t[2 * i] = s[2 * (b + p)];
      t[2 * i + 1] = s[2 * (b + p) + 1];
    }
    for (int64_t i = 0; i < 2 * W; ++i) o[2 * b + i] += w * t[i];
  }
}

typedef double v4d __attribute__((vector_size(32)));  // two complex entries

inline v4d load(const double* p) {
  v4d v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void add_to(double* p, v4d v) {
  v += load(p);
  std::memcpy(p, &v, sizeof v);
}

// Swap column side: o[c] += w * s[p(c)], p exchanging bits ma < mb of c.
void swap_cols(double* __restrict__ o, double w, const double* __restrict__ s,
               int64_t n_cols, int64_t ma, int64_t mb) {
  if (ma == 1) {
    // pairs (c, c + 1) and (c + mb, c + mb + 1): the odd entry of the first trades
    // with the even entry of the second (lane shuffles; GCC compiles the one-entry
    // loop to code 1.5x slower)
    for (int64_t h = 0; h < n_cols; h += 2 * mb)
      for (int64_t c = h; c < h + mb; c += 2) {
        const v4d a = load(s + 2 * c), b = load(s + 2 * (c + mb));
        add_to(o + 2 * c, w * v4d{a[0], a[1], b[0], b[1]});
        add_to(o + 2 * (c + mb), w * v4d{a[2], a[3], b[2], b[3]});
      }
    return;
  }
  if (ma == 2 && mb == 4 && n_cols >= W) return swap_small<2, 4>(o, w, s, n_cols);
  if (ma < W) {  // pairs of entries move together: one index per pair
    for (int64_t c = 0; c < n_cols; c += 2)
      add_to(o + 2 * c, w * load(s + 2 * swapped(c, ma, mb)));
    return;
  }
  for (int64_t h = 0; h < n_cols; h += 2 * mb)
    for (int64_t g = h; g < h + mb; g += 2 * ma) {
      raxpy(o + 2 * g, w, s + 2 * g, ma);
      raxpy(o + 2 * (g + ma), w, s + 2 * (g + mb), ma);
      raxpy(o + 2 * (g + mb), w, s + 2 * (g + ma), ma);
      raxpy(o + 2 * (g + mb + ma), w, s + 2 * (g + mb + ma), ma);
    }
}

struct Terms {
  int64_t N, F, J, E;
  const cd* rho;
  const cd* d;       // (N): row diagonal, with half the constant
  const cd* flip;    // (F, N): c_f[r]
  const int64_t* fm; // (F): row masks f
  const cd* ju;      // (J, N): u[r] / 2
  const cd* jv;      // (J, 2): column factor for bit 0 and bit 1 of the jump qubit
  const int64_t* jq; // (J, 3): qubit mask, row flip, column flip (0/1)
  const double* w;   // (E): swap rates / 2
  const int64_t* em; // (E, 2): the two bit masks, lower first
};

void rows(const Terms& t, cd* out, int64_t r0, int64_t r1) {
  const int64_t N = t.N;
  const double* R = reinterpret_cast<const double*>(t.rho);
  for (int64_t r = r0; r < r1; ++r) {
    double* o = reinterpret_cast<double*>(out + r * N);
    const double* row = R + 2 * r * N;
    const double dr = t.d[r].real(), di = t.d[r].imag();
    for (int64_t i = 0; i < 2 * N; i += 2) {
      o[i] = dr * row[i] - di * row[i + 1];
      o[i + 1] = dr * row[i + 1] + di * row[i];
    }
    for (int64_t f = 0; f < t.F; ++f) {
      const cd k = t.flip[f * N + r];
      if (k != cd(0)) axpy(o, k, R + 2 * (r ^ t.fm[f]) * N, N);
    }
    for (int64_t j = 0; j < t.J; ++j) {
      const cd u = t.ju[j * N + r];
      if (u == cd(0)) continue;
      const int64_t* q = t.jq + 3 * j;
      const double* src = R + 2 * (q[1] ? r ^ q[0] : r) * N;
      jump_cols(o, u * t.jv[2 * j], u * t.jv[2 * j + 1], src, N, q[0], q[2] != 0);
    }
    for (int64_t e = 0; e < t.E; ++e) {
      const int64_t ma = t.em[2 * e], mb = t.em[2 * e + 1];
      const int64_t pr = ((r & ma) != 0) != ((r & mb) != 0) ? r ^ (ma | mb) : r;
      swap_cols(o, t.w[e], R + 2 * pr * N, N, ma, mb);
    }
  }
}

constexpr int64_t kTile = 32;

// out = X + X^dag for the tile rows [i0, i1): tile (i, j), j >= i, with tile (j, i).
// Both tiles are copied out first: a column walk of X itself strides by N entries
// (4 KiB at n = 8) and thrashes the L1 sets.
void symmetrize(cd* X, int64_t N, int64_t i0, int64_t i1) {
  const int64_t T = std::min(kTile, N);
  cd a[kTile * kTile], b[kTile * kTile];
  for (int64_t bi = i0; bi < i1; bi += T)
    for (int64_t bj = bi; bj < N; bj += T) {
      for (int64_t r = 0; r < T; ++r)
        for (int64_t c = 0; c < T; ++c) {
          a[r * T + c] = X[(bi + r) * N + bj + c];
          b[r * T + c] = X[(bj + r) * N + bi + c];
        }
      for (int64_t r = 0; r < T; ++r)
        for (int64_t c = 0; c < T; ++c)
          X[(bi + r) * N + bj + c] = a[r * T + c] + std::conj(b[c * T + r]);
      if (bj != bi)
        for (int64_t r = 0; r < T; ++r)
          for (int64_t c = 0; c < T; ++c)
            X[(bj + r) * N + bi + c] = b[r * T + c] + std::conj(a[c * T + r]);
    }
}

// CPUs this thread may run on: XLA sizes its pool by the machine, so a process
// pinned to fewer cores (taskset, a batch slot) would otherwise time-slice workers.
int64_t allowed_cpus() {
#ifdef __linux__
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
#endif
  return INT64_MAX;
}

// Runs body(lo, hi) over [0, n) in chunks of `grain` on XLA's intra-op pool.
template <typename Body>
void parallel(ffi::ThreadPool& pool, int64_t n, int64_t grain, Body body) {
  static const int64_t cpus = allowed_cpus();
  const int64_t chunks = (n + grain - 1) / grain;
  const int64_t workers = std::min({pool.num_threads(), cpus, chunks});
  if (workers <= 1) {
    body(0, n);
    return;
  }
  std::atomic<int64_t> next{0};
  std::mutex mu;
  std::condition_variable done;
  int64_t running = workers;
  auto work = [&] {
    for (int64_t c; (c = next.fetch_add(1)) < chunks;)
      body(c * grain, std::min(n, (c + 1) * grain));
    std::lock_guard<std::mutex> lock(mu);
    if (--running == 0) done.notify_one();
  };
  for (int64_t w = 1; w < workers; ++w) pool.Schedule([&work] { work(); });
  work();
  std::unique_lock<std::mutex> lock(mu);
  done.wait(lock, [&] { return running == 0; });
}

ffi::Error NetworkRhs(ffi::ThreadPool pool, ffi::Buffer<ffi::C128> rho,
                      ffi::Buffer<ffi::C128> d, ffi::Buffer<ffi::C128> flip,
                      ffi::Buffer<ffi::S64> fm, ffi::Buffer<ffi::C128> ju,
                      ffi::Buffer<ffi::C128> jv, ffi::Buffer<ffi::S64> jq,
                      ffi::Buffer<ffi::F64> w, ffi::Buffer<ffi::S64> em,
                      ffi::ResultBuffer<ffi::C128> out) {
  const auto count = [](const auto& b) {
    return static_cast<int64_t>(b.element_count());
  };
  const int64_t N = count(d), F = count(fm), J = count(jv) / 2, E = count(w);
  if (count(rho) != N * N || count(flip) != F * N || count(ju) != J * N ||
      count(jq) != 3 * J || count(em) != 2 * E)
    return ffi::Error::InvalidArgument(
        "network kernel: inconsistent shapes (rho (N, N), d (N), flip (F, N), fm "
        "(F), ju (J, N), jv (J, 2), jq (J, 3), w (E), em (E, 2))");
  const Terms t{N, F, J, E,
                rho.typed_data(), d.typed_data(), flip.typed_data(), fm.typed_data(),
                ju.typed_data(), jv.typed_data(), jq.typed_data(), w.typed_data(),
                em.typed_data()};
  cd* X = out->typed_data();
  // below 256 x 256 a pass takes tens of microseconds, about what handing work to
  // the pool costs (measured: n = 6 ran 2x slower on two threads than on one)
  const bool split = N >= 256;
  parallel(pool, N, split ? std::max<int64_t>(1, 4096 / N) : N,
           [&](int64_t lo, int64_t hi) { rows(t, X, lo, hi); });
  const int64_t T = std::min(kTile, N);
  // tile row i pairs with N / T - i tiles: interleave long and short tile rows
  parallel(pool, N / T, split ? 1 : N / T, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t b = (i % 2 == 0) ? i / 2 : N / T - 1 - i / 2;
      symmetrize(X, N, b * T, (b + 1) * T);
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(QflowNetworkRhs, NetworkRhs,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::C128>>()
                                  .Arg<ffi::Buffer<ffi::C128>>()
                                  .Arg<ffi::Buffer<ffi::C128>>()
                                  .Arg<ffi::Buffer<ffi::S64>>()
                                  .Arg<ffi::Buffer<ffi::C128>>()
                                  .Arg<ffi::Buffer<ffi::C128>>()
                                  .Arg<ffi::Buffer<ffi::S64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::S64>>()
                                  .Ret<ffi::Buffer<ffi::C128>>());
