//! Status codes, the per-thread last-error message and the panic boundary that every
//! export runs inside.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use ghostcore::gguf::GgufError;
use ghostcore::Error;

/// The result of every fallible call. `GC_OK` is 0; every other value is an error whose
/// detail `gc_last_error()` returns on the same thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum gc_status {
    /// Success.
    GC_OK = 0,
    /// A NULL pointer where one is required, a value out of range, a handle of the wrong
    /// kind, a params struct whose struct_size is too small, or a context used from two
    /// threads at once.
    GC_ERR_INVALID_ARG = 1,
    /// A file could not be opened, read or written.
    GC_ERR_IO = 2,
    /// A file is malformed (bad GGUF, bad mask file, missing or misshapen tensor).
    GC_ERR_FORMAT = 3,
    /// Well-formed input that this build does not run (architecture, tensor type), or a
    /// feature this build does not have yet (see the function's comment).
    GC_ERR_UNSUPPORTED = 4,
    /// An allocation failed (host or device memory).
    GC_ERR_OUT_OF_MEMORY = 5,
    /// The CUDA driver or a kernel reported an error.
    GC_ERR_CUDA = 6,
    /// The operation was cancelled before it finished.
    GC_ERR_CANCELLED = 7,
    /// A bug in GhostCore (including a caught Rust panic). Please report it with the
    /// message from gc_last_error().
    GC_ERR_INTERNAL = 8,
    /// A caller buffer is too small. The call has written the size it needs to its size
    /// out-parameter and has not touched the buffer.
    GC_ERR_BUFFER_TOO_SMALL = 9,
}

/// An error on its way to the C caller: the status to return and the message to leave
/// for `gc_last_error()`.
#[derive(Debug)]
pub(crate) struct FfiError {
    pub status: gc_status,
    pub message: String,
}

impl FfiError {
    pub fn new(status: gc_status, message: impl Into<String>) -> Self {
        FfiError {
            status,
            message: message.into(),
        }
    }
}

pub(crate) type FfiResult<T> = Result<T, FfiError>;

/// `Err(FfiError)` with status `GC_ERR_INVALID_ARG`.
pub(crate) fn invalid_arg<T>(message: impl Into<String>) -> FfiResult<T> {
    Err(FfiError::new(gc_status::GC_ERR_INVALID_ARG, message))
}

/// `Err(FfiError)` with status `GC_ERR_UNSUPPORTED`.
pub(crate) fn unsupported<T>(message: impl Into<String>) -> FfiResult<T> {
    Err(FfiError::new(gc_status::GC_ERR_UNSUPPORTED, message))
}

impl From<Error> for FfiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Gguf(GgufError::Io { .. }) | Error::Io(_) => gc_status::GC_ERR_IO,
            Error::Gguf(_) | Error::Format(_) => gc_status::GC_ERR_FORMAT,
            Error::Unsupported(_) => gc_status::GC_ERR_UNSUPPORTED,
            Error::InvalidArgument(_) => gc_status::GC_ERR_INVALID_ARG,
            Error::OutOfMemory(_) => gc_status::GC_ERR_OUT_OF_MEMORY,
            Error::Cuda(_) => gc_status::GC_ERR_CUDA,
            Error::Cancelled => gc_status::GC_ERR_CANCELLED,
            Error::Internal(_) => gc_status::GC_ERR_INTERNAL,
        };
        FfiError::new(status, e.to_string())
    }
}

impl From<GgufError> for FfiError {
    fn from(e: GgufError) -> Self {
        Error::from(e).into()
    }
}

thread_local! {
    /// The message of the most recent failing call on this thread (empty: none yet).
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Stores `message` as this thread's last error. Interior NUL bytes (possible in a
/// message quoting hostile file content) are replaced so the C string stays whole.
pub(crate) fn set_last_error(message: &str) {
    let clean = message.replace('\0', "\\0");
    let c = CString::new(clean).unwrap_or_default();
    LAST_ERROR.with(|slot| *slot.borrow_mut() = c);
}

/// The pointer `gc_last_error` hands out: it stays valid until this thread's next
/// failing call replaces the string.
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|slot| slot.borrow().as_ptr())
}

/// Runs the body of a fallible export: a `FfiError` or a panic becomes a status code plus
/// this thread's last-error message. Every `gc_status`-returning export goes through here.
pub(crate) fn boundary(body: impl FnOnce() -> FfiResult<()>) -> gc_status {
    // AssertUnwindSafe: after a panic nothing the closure touched is used again by this
    // call; handles it borrowed stay usable because each keeps its own invariants (a
    // context behind a poisoned mutex is recovered by `Context::lock`).
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => gc_status::GC_OK,
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".to_string());
            set_last_error(&format!(
                "internal error: a Rust panic was caught at the C boundary: {what}"
            ));
            gc_status::GC_ERR_INTERNAL
        }
    }
}

/// A static, NUL-terminated name for each status.
pub(crate) fn status_name(status: gc_status) -> &'static [u8] {
    match status {
        gc_status::GC_OK => b"GC_OK\0",
        gc_status::GC_ERR_INVALID_ARG => b"GC_ERR_INVALID_ARG\0",
        gc_status::GC_ERR_IO => b"GC_ERR_IO\0",
        gc_status::GC_ERR_FORMAT => b"GC_ERR_FORMAT\0",
        gc_status::GC_ERR_UNSUPPORTED => b"GC_ERR_UNSUPPORTED\0",
        gc_status::GC_ERR_OUT_OF_MEMORY => b"GC_ERR_OUT_OF_MEMORY\0",
        gc_status::GC_ERR_CUDA => b"GC_ERR_CUDA\0",
        gc_status::GC_ERR_CANCELLED => b"GC_ERR_CANCELLED\0",
        gc_status::GC_ERR_INTERNAL => b"GC_ERR_INTERNAL\0",
        gc_status::GC_ERR_BUFFER_TOO_SMALL => b"GC_ERR_BUFFER_TOO_SMALL\0",
    }
}

/// Returns the message of the most recent failing GhostCore call on the calling thread,
/// or "" if none has failed yet. Never NULL. The string belongs to the library and stays
/// valid until the next failing call on this thread; copy it to keep it. Successful calls
/// leave it unchanged.
#[no_mangle]
pub extern "C" fn gc_last_error() -> *const c_char {
    // Cannot panic: a thread-local borrow of a CString.
    last_error_ptr()
}

/// Returns the name of a status code ("GC_OK", "GC_ERR_IO", ...) as a static string, or
/// "GC_UNKNOWN_STATUS" for a value that is not a gc_status. Never NULL.
#[no_mangle]
pub extern "C" fn gc_status_name(status: i32) -> *const c_char {
    let known = [
        gc_status::GC_OK,
        gc_status::GC_ERR_INVALID_ARG,
        gc_status::GC_ERR_IO,
        gc_status::GC_ERR_FORMAT,
        gc_status::GC_ERR_UNSUPPORTED,
        gc_status::GC_ERR_OUT_OF_MEMORY,
        gc_status::GC_ERR_CUDA,
        gc_status::GC_ERR_CANCELLED,
        gc_status::GC_ERR_INTERNAL,
        gc_status::GC_ERR_BUFFER_TOO_SMALL,
    ];
    let name: &'static [u8] = known
        .iter()
        .find(|s| **s as i32 == status)
        .map(|s| status_name(*s))
        .unwrap_or(b"GC_UNKNOWN_STATUS\0");
    name.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last_error() -> String {
        // SAFETY: gc_last_error never returns NULL and points at a live CString.
        unsafe { CStr::from_ptr(gc_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn panic_becomes_internal_status_with_message() {
        let status = boundary(|| panic!("boom {}", 42));
        assert_eq!(status, gc_status::GC_ERR_INTERNAL);
        let msg = last_error();
        assert!(msg.contains("panic") && msg.contains("boom 42"), "{msg}");
    }

    #[test]
    fn error_sets_status_and_message_success_keeps_it() {
        let status = boundary(|| invalid_arg("model is NULL"));
        assert_eq!(status, gc_status::GC_ERR_INVALID_ARG);
        assert_eq!(last_error(), "model is NULL");
        assert_eq!(boundary(|| Ok(())), gc_status::GC_OK);
        assert_eq!(last_error(), "model is NULL");
    }

    #[test]
    fn last_error_is_per_thread() {
        set_last_error("main thread");
        std::thread::spawn(|| {
            assert_eq!(last_error(), "");
            set_last_error("other thread");
        })
        .join()
        .unwrap();
        assert_eq!(last_error(), "main thread");
    }

    #[test]
    fn interior_nul_is_escaped() {
        set_last_error("a\0b");
        assert_eq!(last_error(), "a\\0b");
    }

    #[test]
    fn crate_errors_map_to_statuses() {
        let cases = [
            (
                Error::Unsupported("a".into()),
                gc_status::GC_ERR_UNSUPPORTED,
            ),
            (Error::Format("a".into()), gc_status::GC_ERR_FORMAT),
            (
                Error::InvalidArgument("a".into()),
                gc_status::GC_ERR_INVALID_ARG,
            ),
            (
                Error::OutOfMemory("a".into()),
                gc_status::GC_ERR_OUT_OF_MEMORY,
            ),
            (Error::Cuda("a".into()), gc_status::GC_ERR_CUDA),
            (Error::Cancelled, gc_status::GC_ERR_CANCELLED),
            (Error::Internal("a".into()), gc_status::GC_ERR_INTERNAL),
            (Error::Io(std::io::Error::other("a")), gc_status::GC_ERR_IO),
        ];
        for (e, want) in cases {
            assert_eq!(FfiError::from(e).status, want);
        }
    }

    #[test]
    fn status_names_are_static_and_cover_unknown() {
        // SAFETY: gc_status_name returns a static NUL-terminated string.
        let name = |s: i32| {
            unsafe { CStr::from_ptr(gc_status_name(s)) }
                .to_str()
                .unwrap()
        };
        assert_eq!(name(0), "GC_OK");
        assert_eq!(name(9), "GC_ERR_BUFFER_TOO_SMALL");
        assert_eq!(name(-1), "GC_UNKNOWN_STATUS");
        assert_eq!(name(1000), "GC_UNKNOWN_STATUS");
    }
}
