/* Prints, for the CPython whose headers are on the include path, the offsets oxeye
 * reads (agent/src/python/versions.rs checks its table against this). Built with
 * -I include/python3.X -I include/python3.X/internal by the unit test. */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stddef.h>
#include <stdio.h>
#if PY_VERSION_HEX >= 0x030B0000
#include "internal/pycore_frame.h"
#endif
#if PY_VERSION_HEX >= 0x03090000
#include "internal/pycore_runtime.h"
#include "internal/pycore_interp.h"
#else
#include "internal/pycore_pystate.h"
#endif
#if PY_VERSION_HEX < 0x030B0000
#include "frameobject.h"
#endif
#define P(name, expr) printf("%s=%zu\n", name, (size_t)(expr))
int main(void) {
  printf("version=%x\n", PY_VERSION_HEX);
  P("runtime_interpreters_main", offsetof(_PyRuntimeState, interpreters.main));
  P("runtime_main_thread", offsetof(_PyRuntimeState, main_thread));
#if PY_VERSION_HEX >= 0x030B0000
  P("interp_threads_head", offsetof(PyInterpreterState, threads.head));
#else
  P("interp_threads_head", offsetof(PyInterpreterState, tstate_head));
#endif
  P("tstate_next", offsetof(PyThreadState, next));
  P("tstate_thread_id", offsetof(PyThreadState, thread_id));
#if PY_VERSION_HEX >= 0x030B0000
  P("tstate_native_thread_id", offsetof(PyThreadState, native_thread_id));
#endif
#if PY_VERSION_HEX >= 0x030D0000
  P("tstate_frame", offsetof(PyThreadState, current_frame));
#elif PY_VERSION_HEX >= 0x030B0000
  P("tstate_frame", offsetof(PyThreadState, cframe));
  P("cframe_current_frame", offsetof(_PyCFrame, current_frame));
#else
  P("tstate_frame", offsetof(PyThreadState, frame));
#endif
#if PY_VERSION_HEX >= 0x030B0000
#if PY_VERSION_HEX >= 0x030D0000
  P("frame_code", offsetof(_PyInterpreterFrame, f_executable));
  P("frame_instr", offsetof(_PyInterpreterFrame, instr_ptr));
#else
  P("frame_code", offsetof(_PyInterpreterFrame, f_code));
  P("frame_instr", offsetof(_PyInterpreterFrame, prev_instr));
#endif
  P("frame_previous", offsetof(_PyInterpreterFrame, previous));
  P("frame_owner", offsetof(_PyInterpreterFrame, owner));
#if PY_VERSION_HEX < 0x030C0000
  P("frame_is_entry", offsetof(_PyInterpreterFrame, is_entry));
#endif
  P("code_qualname", offsetof(PyCodeObject, co_qualname));
  P("code_adaptive", offsetof(PyCodeObject, co_code_adaptive));
  P("code_linetable", offsetof(PyCodeObject, co_linetable));
#else
  P("frame_code", offsetof(PyFrameObject, f_code));
  P("frame_previous", offsetof(PyFrameObject, f_back));
  P("frame_instr", offsetof(PyFrameObject, f_lasti));
#if PY_VERSION_HEX >= 0x030A0000
  P("code_linetable", offsetof(PyCodeObject, co_linetable));
#else
  P("code_linetable", offsetof(PyCodeObject, co_lnotab));
#endif
#endif
  P("code_filename", offsetof(PyCodeObject, co_filename));
  P("code_name", offsetof(PyCodeObject, co_name));
  P("code_firstlineno", offsetof(PyCodeObject, co_firstlineno));
  P("code_flags", offsetof(PyCodeObject, co_flags));
  P("code_argcount", offsetof(PyCodeObject, co_argcount));
  P("unicode_ascii_size", sizeof(PyASCIIObject));
  P("unicode_compact_size", sizeof(PyCompactUnicodeObject));
  P("unicode_state", offsetof(PyASCIIObject, state));
  P("unicode_length", offsetof(PyASCIIObject, length));
  P("bytes_size", offsetof(PyVarObject, ob_size));
  P("bytes_data", offsetof(PyBytesObject, ob_sval));
  return 0;
}
