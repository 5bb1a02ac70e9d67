# Declarations of fastpool.aio's compiled bridge; the implementation is in _bridge.pyx.

cdef class SyncConnection:
    cdef public object driver_connection  # the async driver's connection
    cdef public object loop               # the event loop it belongs to
    cdef public bint interrupted          # a call on it was cut off mid-way: state unknown
    cdef public bint closed
    cdef readonly bint one_call           # its driver connection has run_statement() (see statement())
    cdef dict attrs                       # attributes the dialect keeps on it
    cpdef object wait(self, object value)
