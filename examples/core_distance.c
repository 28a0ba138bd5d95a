// How far apart the machine's two CPUs are: the round trip of a cache line bounced between a
// thread pinned to CPU 0 and one pinned to CPU 1, printed every ~0.2 s. On this project's
// shared VM it is bimodal: 50-70 ns (vCPUs on cores that share a cache) or 340-385 ns (cores
// far apart), switching while a benchmark runs; see "Machine phases" in the README.
//
// usage: cc -O2 -pthread examples/core_distance.c -o /tmp/core_distance && /tmp/core_distance 60
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static _Atomic long flag __attribute__((aligned(64)));
static _Atomic int stop;
enum { kRounds = 200000 };

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void pin(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  if (pthread_setaffinity_np(pthread_self(), sizeof s, &s) != 0) {
    fprintf(stderr, "core_distance: cannot pin a thread to CPU %d\n", cpu);
    exit(2);
  }
}

static void* pong(void* arg) {
  (void)arg;
  pin(1);
  for (long v = 1; !atomic_load(&stop); v += 2) {
    while (atomic_load_explicit(&flag, memory_order_acquire) != v)
      if (atomic_load(&stop)) return NULL;
    atomic_store_explicit(&flag, v + 1, memory_order_release);
  }
  return NULL;
}

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? atof(argv[1]) : 30;
  pin(0);
  pthread_t t;
  pthread_create(&t, NULL, pong, NULL);
  long v = 0;
  const double start = now();
  while (now() - start < seconds) {
    const double t0 = now();
    for (int i = 0; i < kRounds; ++i) {
      atomic_store_explicit(&flag, v + 1, memory_order_release);
      v += 2;
      while (atomic_load_explicit(&flag, memory_order_acquire) != v) {
      }
    }
    printf("%6.1f s  round trip %.0f ns\n", now() - start, (now() - t0) / kRounds * 1e9);
    fflush(stdout);
    nanosleep(&(struct timespec){0, 200000000}, NULL);
  }
  atomic_store(&stop, 1);
  pthread_join(t, NULL);
  return 0;
}
