/* The MPI side of ucx_bench.cc, timed the same way (median of 5 loops of
 * about 50 ms): ping-pong, bidirectional exchange (MPI_Sendrecv) and
 * MPI_Allreduce of float32.
 *   mpirun -np 2 ./mpi_bench pingpong|exchange|allreduce [max_bytes [B1,B2,..]] */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const char* mode = argc > 1 ? argv[1] : "pingpong";
  size_t maxBytes = argc > 2 ? strtoull(argv[2], NULL, 10) : 268435456;
  char* b1 = malloc(maxBytes + 64);
  char* b2 = malloc(maxBytes + 64);
  memset(b1, 1, maxBytes + 64);
  memset(b2, 0, maxBytes + 64);
  int peer = 1 - rank;
  if (rank == 0) printf("# %s, %d ranks, MPI\n", mode, size);
  size_t sizes[64];
  int ns = 0;
  if (argc > 3) { /* an explicit list: 4096,8192,... (max_bytes must cover it) */
    for (char* p = argv[3]; *p && ns < 64;) {
      sizes[ns++] = strtoull(p, &p, 10);
      if (*p == ',') ++p;
    }
  } else {
    for (size_t s = 8; s <= maxBytes; s *= (s < 65536 ? 8 : 4)) sizes[ns++] = s;
  }
  for (int k = 0; k < ns; ++k) {
    size_t bytes = sizes[k];
    int cnt = (int)bytes;
    double loops[5];
    int iters = 0;
    for (int phase = 0; phase < 6; ++phase) {
      int n = phase == 0 ? 3 : iters;
      MPI_Barrier(MPI_COMM_WORLD);
      double t0 = MPI_Wtime();
      for (int i = 0; i < n; ++i) {
        if (!strcmp(mode, "pingpong")) {
          if (rank == 0) {
            MPI_Send(b1, cnt, MPI_BYTE, peer, 0, MPI_COMM_WORLD);
            MPI_Recv(b1, cnt, MPI_BYTE, peer, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
          } else {
            MPI_Recv(b1, cnt, MPI_BYTE, peer, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Send(b1, cnt, MPI_BYTE, peer, 0, MPI_COMM_WORLD);
          }
        } else if (!strcmp(mode, "exchange")) {
          MPI_Sendrecv(b1, cnt, MPI_BYTE, peer, 0, b2, cnt, MPI_BYTE, peer, 0, MPI_COMM_WORLD,
                       MPI_STATUS_IGNORE);
        } else {
          MPI_Allreduce(MPI_IN_PLACE, b1, (int)(bytes / 4), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        }
      }
      double per = (MPI_Wtime() - t0) / n;
      if (phase == 0) {
        iters = (int)(0.05 / (per > 1e-7 ? per : 1e-7));
        if (iters < 2) iters = 2;
        if (iters > 20000) iters = 20000;
        MPI_Bcast(&iters, 1, MPI_INT, 0, MPI_COMM_WORLD);
      } else {
        loops[phase - 1] = per;
      }
    }
    qsort(loops, 5, sizeof(double), cmp);
    double tm = loops[2], best = loops[0];
    if (!strcmp(mode, "pingpong")) tm /= 2, best /= 2;
    if (rank == 0) {
      printf("%12zu  %12.2f us (min %10.2f)", bytes, tm * 1e6, best * 1e6);
      if (!strcmp(mode, "allreduce"))
        printf("  algbw %7.3f GB/s  busbw %7.3f GB/s\n", bytes / tm / 1e9,
               bytes / tm / 1e9 * 2 * (size - 1) / size);
      else
        printf("  %7.3f GB/s\n", bytes / tm / 1e9);
      fflush(stdout);
    }
  }
  MPI_Finalize();
  return 0;
}
