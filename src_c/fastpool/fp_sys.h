/* Small portable system shims for the fastpool core.
 *
 *  fp_mutex   - the pool's own lock. PyMutex on 3.13+ (one byte, never needs the GIL);
 *               a pthread mutex before (a PyThread lock on Windows). It can be re-initialised in a forked child,
 *               where a lock held by a thread of the parent would otherwise stay held
 *               forever. Call lock/unlock with the thread attached (GIL held on GIL builds):
 *               when contended they detach while blocking, so a holder never waits on us.
 *               fp_mutex_lock_detached is for a thread that has already let go of the GIL
 *               (a waiter settling its own timer without taking the GIL back).
 *  fp_now     - monotonic seconds (CLOCK_MONOTONIC, the clock time.monotonic() reads on Linux).
 *  fp_now_coarse - the same clock at tick resolution (a few ms) but ~5x cheaper; good
 *               enough for lifetimes and idle times, which are seconds.
 *  fp_fd_dead - a zero-timeout poll of an idle connection's socket: readable or hung up
 *               means the server closed it (or sent an error before closing). No round trip.
 */
#ifndef FASTPOOL_FP_SYS_H
#define FASTPOOL_FP_SYS_H

#include <Python.h>
#include <pythread.h>
#include <string.h>

#if PY_VERSION_HEX >= 0x030D0000
typedef PyMutex fp_mutex;
static inline int fp_mutex_init(fp_mutex *m) { memset(m, 0, sizeof(*m)); return 0; }
static inline void fp_mutex_free(fp_mutex *m) { (void)m; }
static inline void fp_mutex_lock(fp_mutex *m) { PyMutex_Lock(m); }
static inline void fp_mutex_unlock(fp_mutex *m) { PyMutex_Unlock(m); }
static inline void fp_mutex_lock_detached(fp_mutex *m) { PyMutex_Lock(m); }
static inline int fp_mutex_reinit_after_fork(fp_mutex *m) { return fp_mutex_init(m); }
#elif !defined(_WIN32)
/* Before 3.13, a plain pthread mutex: a PyThread lock is a semaphore whose acquire also
 * reads the clock, several times the cost of an uncontended mutex round. The protocol is
 * the same: try without waiting; if it is held, wait with the GIL released, so a holder
 * that needs the GIL is never blocked by us. */
#include <pthread.h>
typedef struct { pthread_mutex_t mutex; } fp_mutex;
static inline int fp_mutex_init(fp_mutex *m) { return pthread_mutex_init(&m->mutex, NULL); }
static inline void fp_mutex_free(fp_mutex *m) { pthread_mutex_destroy(&m->mutex); }
static inline void fp_mutex_lock(fp_mutex *m) {
    if (pthread_mutex_trylock(&m->mutex) != 0) {
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&m->mutex);
        Py_END_ALLOW_THREADS
    }
}
static inline void fp_mutex_unlock(fp_mutex *m) { pthread_mutex_unlock(&m->mutex); }
static inline void fp_mutex_lock_detached(fp_mutex *m) { pthread_mutex_lock(&m->mutex); }
/* After fork() only the forking thread exists; a mutex some other parent thread held is
 * held forever in the child, so the child makes it anew. */
static inline int fp_mutex_reinit_after_fork(fp_mutex *m) { return fp_mutex_init(m); }
#else
typedef struct { PyThread_type_lock lock; } fp_mutex;
static inline int fp_mutex_init(fp_mutex *m) {
    m->lock = PyThread_allocate_lock();
    return m->lock ? 0 : -1;
}
static inline void fp_mutex_free(fp_mutex *m) {
    if (m->lock) { PyThread_free_lock(m->lock); m->lock = NULL; }
}
static inline void fp_mutex_lock(fp_mutex *m) {
    if (!PyThread_acquire_lock(m->lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(m->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
}
static inline void fp_mutex_unlock(fp_mutex *m) { PyThread_release_lock(m->lock); }
static inline void fp_mutex_lock_detached(fp_mutex *m) { PyThread_acquire_lock(m->lock, WAIT_LOCK); }
/* After fork() a lock some other parent thread held is held forever in the child: the
 * child gets a fresh one (the old one is leaked). */
static inline int fp_mutex_reinit_after_fork(fp_mutex *m) {
    m->lock = NULL;
    return fp_mutex_init(m);
}
#endif

#ifdef _WIN32
#include <windows.h>
static inline double fp_now(void) {
    static LARGE_INTEGER freq;
    LARGE_INTEGER c;
    if (freq.QuadPart == 0) QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&c);
    return (double)c.QuadPart / (double)freq.QuadPart;
}
static inline double fp_now_coarse(void) { return fp_now(); }
static inline int fp_fd_dead(long long fd) { (void)fd; return 0; }
#else
#include <time.h>
#include <poll.h>
static inline double fp_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
static inline double fp_now_coarse(void) {
#ifdef CLOCK_MONOTONIC_COARSE
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
#else
    return fp_now();
#endif
}
static inline int fp_fd_dead(long long fd) {
    struct pollfd p;
    int r;
    if (fd < 0) return 0;
    p.fd = (int)fd;
    p.events = POLLIN | POLLPRI;
    p.revents = 0;
    r = poll(&p, 1, 0);
    if (r <= 0) return 0;  /* nothing to read: alive (or poll failed: let the query tell) */
    return (p.revents & (POLLIN | POLLPRI | POLLHUP | POLLERR | POLLNVAL)) != 0;
}
#endif

/* The code object and instruction offset of the Python frame `depth` levels above the
 * current one: enough to name the file and line that opened a Rows/Tx/Conn, at the cost of
 * two pointer reads and a reference. The line is computed only if a warning is emitted.
 * Returns a new reference (Py_None if there is no such frame). */
static inline PyObject *fp_caller_code(int depth, int *lasti) {
    PyFrameObject *f = PyEval_GetFrame();   /* borrowed */
    PyFrameObject *back;
    PyObject *code;
    *lasti = -1;
    if (f == NULL) Py_RETURN_NONE;
    Py_INCREF(f);
    while (depth-- > 0) {
        back = PyFrame_GetBack(f);           /* new reference or NULL */
        Py_DECREF(f);
        if (back == NULL) Py_RETURN_NONE;
        f = back;
    }
    *lasti = PyFrame_GetLasti(f);
    code = (PyObject *)PyFrame_GetCode(f);   /* new reference */
    Py_DECREF(f);
    return code;
}

static inline int fp_code_line(PyObject *code, int lasti) {
    if (code == NULL || !PyCode_Check(code) || lasti < 0) return -1;
    return PyCode_Addr2Line((PyCodeObject *)code, lasti);
}

/* fp_chain_traverse - make a type's tp_traverse also call `extra` after the one the type
 * has (Cython's, which visits the object fields). The pool's free list is a C array of
 * owned references that Cython cannot see: unvisited, every idle connection looks
 * referenced from outside, and a cycle through one (an adapter's record pointing back at
 * its pool) is never collected. One chained type per module that includes this. */
typedef visitproc fp_visitproc;
typedef int (*fp_extra_traverse)(PyObject *, visitproc, void *);
static traverseproc fp_chained_base = NULL;
static fp_extra_traverse fp_chained_extra = NULL;
static int fp_chained_traverse(PyObject *o, visitproc visit, void *arg) {
    int r = fp_chained_base != NULL ? fp_chained_base(o, visit, arg) : 0;
    if (r != 0) return r;
    return fp_chained_extra(o, visit, arg);
}
static inline int fp_chain_traverse(PyTypeObject *t, fp_extra_traverse extra) {
    if (fp_chained_extra != NULL) return -1;
    fp_chained_base = t->tp_traverse;
    fp_chained_extra = extra;
    t->tp_traverse = fp_chained_traverse;
    return 0;
}

/* PyThread_acquire_lock_timed is public C API but Cython does not declare it. */
#define fp_lock_acquire_timed(lock, us, intr) PyThread_acquire_lock_timed((lock), (PY_TIMEOUT_T)(us), (intr))
#define FP_TIMEOUT_MAX_US ((long long)PY_TIMEOUT_MAX)

#endif
