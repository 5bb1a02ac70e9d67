"""Build the compiled core (fastpool._core) from src_c/.

All Cython compiler directives live here, in one place. Set FASTPOOL_DEBUG=1 for a
debug build: line tracing (coverage/profilers see the .pyx lines), bounds checks and
C asserts left in.
"""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTPOOL_DEBUG", "") not in ("", "0")

directives = {
    "language_level": 3,
    "embedsignature": True,
    # The core guards its own state with a C-level lock; it never relies on the GIL.
    "freethreading_compatible": True,
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "linetrace": DEBUG,
    "profile": False,
}

macros = []
compile_args = []
if DEBUG:
    macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1"), ("FASTPOOL_DEBUG", "1")]
    compile_args += ["-O0", "-g", "-UNDEBUG"] if os.name != "nt" else []

extensions = [
    Extension(
        "fastpool._core",
        sources=["src_c/fastpool/_core.pyx"],
        include_dirs=["src_c/fastpool"],
        define_macros=macros,
        extra_compile_args=compile_args,
        depends=["src_c/fastpool/_core.pxd", "src_c/fastpool/fp_sys.h"],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        include_path=["src_c"],
        force=DEBUG,
    )
)
