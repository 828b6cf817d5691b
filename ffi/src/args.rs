//! Checked conversions of raw C arguments: handles, strings, arrays, versioned params
//! structs, out-parameters and caller buffers. All the pointer-reading unsafe code of the
//! ABI lives here, so each export states its contract once and stays safe.

use std::ffi::{c_char, CStr};
use std::mem::{size_of, MaybeUninit};
use std::ptr;

use crate::status::{gc_status, invalid_arg, FfiError, FfiResult};

/// An opaque handle allocated by this library. `MAGIC` is the value of its leading
/// `magic` field while it is alive; it lets a call reject a handle of another kind (or a
/// pointer to a freed handle whose memory has not been reused) with `GC_ERR_INVALID_ARG`
/// instead of misreading it. It is a best-effort check, not a guarantee: passing a
/// dangling or foreign pointer is a caller error the header forbids.
///
/// # Safety
/// Implementors are `#[repr(C)]` with `magic: u64` as their first field.
pub(crate) unsafe trait Handle: Sized {
    const MAGIC: u64;
    const NAME: &'static str;
}

/// Reads the handle behind `p`.
///
/// # Safety
/// `p` is NULL or points to memory readable for at least 8 bytes; if its magic matches it
/// is a live `T` created by this library and not being freed concurrently (the header's
/// contract).
pub(crate) unsafe fn handle<'a, T: Handle>(p: *const T, arg: &str) -> FfiResult<&'a T> {
    if p.is_null() {
        return invalid_arg(format!("{arg} is NULL"));
    }
    // SAFETY: non-NULL and, per the caller's contract, readable for 8 bytes; read
    // unaligned in case it is not one of our (8-aligned) handles at all.
    let magic = unsafe { ptr::read_unaligned(p.cast::<u64>()) };
    if magic != T::MAGIC {
        return invalid_arg(format!(
            "{arg} is not a live {} handle (wrong kind of handle, or already freed)",
            T::NAME
        ));
    }
    // SAFETY: the magic matches, so this is a live T made by Box::into_raw (aligned, init).
    Ok(unsafe { &*p })
}

/// A NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn c_str<'a>(p: *const c_char, arg: &str) -> FfiResult<&'a str> {
    if p.is_null() {
        return invalid_arg(format!("{arg} is NULL"));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|e| {
        FfiError::new(
            gc_status::GC_ERR_INVALID_ARG,
            format!("{arg} is not UTF-8: {e}"),
        )
    })
}

/// A (pointer, length) array argument; NULL is accepted only when `len` is 0.
///
/// # Safety
/// `p` is NULL or points to `len` initialised `T`s that outlive `'a`.
pub(crate) unsafe fn slice<'a, T>(p: *const T, len: usize, arg: &str) -> FfiResult<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return invalid_arg(format!("{arg} is NULL but its length is {len}"));
    }
    if len
        .checked_mul(size_of::<T>())
        .is_none_or(|bytes| bytes > isize::MAX as usize)
    {
        return invalid_arg(format!("{arg}: length {len} is too large"));
    }
    // SAFETY: non-NULL, `len` elements readable per the caller's contract, size in range.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Checks an out-parameter is non-NULL; write it with [`write_out`] only on success.
pub(crate) fn out_ptr<T>(p: *mut T, arg: &str) -> FfiResult<*mut T> {
    if p.is_null() {
        invalid_arg(format!("{arg} (out-parameter) is NULL"))
    } else {
        Ok(p)
    }
}

/// Writes a checked out-parameter.
///
/// # Safety
/// `p` came from [`out_ptr`] and points to writable memory for a `T` (caller's contract).
pub(crate) unsafe fn write_out<T>(p: *mut T, value: T) {
    // SAFETY: non-NULL (checked by out_ptr) and writable per the caller's contract;
    // write_unaligned because C callers may pass any address for plain integers.
    unsafe { ptr::write_unaligned(p, value) }
}

/// A versioned params struct: `#[repr(C)]`, `Copy`, with `uint32_t struct_size` first.
///
/// # Safety
/// Implementors are `#[repr(C)]`, start with `struct_size: u32`, and every bit pattern a
/// C caller can produce by assigning its fields is a valid value (C `bool`s hold 0 or 1,
/// C11 6.2.5; no Rust enums inside).
pub(crate) unsafe trait Params: Copy {
    /// The size of the first published version of the struct: smaller sizes are rejected.
    const MIN_SIZE: usize;
    const NAME: &'static str;
    fn defaults() -> Self;
}

/// Reads a params struct from C. NULL means "defaults". A larger `struct_size` (a newer
/// header) is accepted; only the fields this library knows are read. A smaller one that
/// still holds the first version is completed with defaults; anything smaller is rejected.
///
/// # Safety
/// `p` is NULL or points to at least `struct_size` readable bytes (caller's contract).
pub(crate) unsafe fn read_params<T: Params>(p: *const T, arg: &str) -> FfiResult<T> {
    if p.is_null() {
        return Ok(T::defaults());
    }
    // SAFETY: non-NULL; every params struct begins with a u32 (caller's contract).
    let declared = unsafe { ptr::read_unaligned(p.cast::<u32>()) } as usize;
    if declared < T::MIN_SIZE {
        return invalid_arg(format!(
            "{arg}: struct_size is {declared}, expected at least {} for {} (set it to \
             sizeof({}), or start from the _default_params() function)",
            T::MIN_SIZE,
            T::NAME,
            T::NAME
        ));
    }
    let n = declared.min(size_of::<T>());
    let mut value = MaybeUninit::new(T::defaults());
    // SAFETY: `declared` bytes are readable at p (caller's contract) and n <= declared;
    // n <= size_of::<T>() so the write stays inside `value`. Every byte pattern a C caller
    // writes through the fields is valid for T (trait contract).
    unsafe {
        ptr::copy_nonoverlapping(p.cast::<u8>(), value.as_mut_ptr().cast::<u8>(), n);
        let mut v = value.assume_init();
        write_struct_size(&mut v, size_of::<T>() as u32);
        Ok(v)
    }
}

/// Writes a versioned out-struct (stats, info) whose caller set `struct_size`: only
/// `min(struct_size, sizeof)` bytes are written, and the caller's struct_size is kept.
///
/// # Safety
/// `p` points to at least `struct_size` writable bytes (caller's contract).
pub(crate) unsafe fn write_versioned<T: Params>(p: *mut T, arg: &str, value: &T) -> FfiResult<()> {
    let p = out_ptr(p, arg)?;
    // SAFETY: non-NULL; begins with a u32 per the caller's contract.
    let declared = unsafe { ptr::read_unaligned(p.cast::<u32>()) } as usize;
    if declared < T::MIN_SIZE {
        return invalid_arg(format!(
            "{arg}: struct_size is {declared}, expected at least {}: set it to sizeof({}) \
             before the call",
            T::MIN_SIZE,
            T::NAME
        ));
    }
    let n = declared.min(size_of::<T>());
    // SAFETY: `declared` >= n writable bytes at p; skip the leading u32 so the caller's
    // struct_size stays as set. `value` is a T, so n bytes of it are readable.
    unsafe {
        ptr::copy_nonoverlapping(
            (value as *const T).cast::<u8>().add(4),
            p.cast::<u8>().add(4),
            n - 4,
        );
    }
    Ok(())
}

/// Sets the leading `struct_size` field of a params value.
fn write_struct_size<T: Params>(value: &mut T, size: u32) {
    // SAFETY: T starts with `struct_size: u32` (trait contract).
    unsafe { ptr::write((value as *mut T).cast::<u32>(), size) }
}

/// Copies `data` into a caller buffer of `capacity` elements and reports the length:
/// `*len_out = data.len()`. With `nul_terminate`, one more element (zero) is written after
/// the data and must fit too. Returns `GC_ERR_BUFFER_TOO_SMALL` (buffer untouched,
/// `*len_out` still written) when it does not fit.
///
/// # Safety
/// `buf` is NULL or writable for `capacity` elements; `len_out` is writable.
pub(crate) unsafe fn copy_to_buffer<T: Copy + Default>(
    data: &[T],
    buf: *mut T,
    capacity: usize,
    len_out: *mut usize,
    nul_terminate: bool,
) -> FfiResult<()> {
    let len_out = out_ptr(len_out, "length out-parameter")?;
    let needed = data.len() + usize::from(nul_terminate);
    // SAFETY: len_out checked non-NULL and writable per the contract.
    unsafe { write_out(len_out, data.len()) };
    if capacity < needed || (needed > 0 && buf.is_null()) {
        return Err(FfiError::new(
            gc_status::GC_ERR_BUFFER_TOO_SMALL,
            format!(
                "buffer too small: {needed} elements needed{}, capacity {capacity}{}",
                if nul_terminate {
                    " (including the NUL)"
                } else {
                    ""
                },
                if buf.is_null() {
                    " (buffer is NULL)"
                } else {
                    ""
                }
            ),
        ));
    }
    // SAFETY: buf is non-NULL (or needed == 0) and has room for `needed` elements.
    unsafe {
        if !data.is_empty() {
            ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len());
        }
        if nul_terminate {
            ptr::write(buf.add(data.len()), T::default());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct V1 {
        struct_size: u32,
        a: u32,
        b: f32,
    }

    // SAFETY: repr(C), leading u32 struct_size, plain numeric fields.
    unsafe impl Params for V1 {
        const MIN_SIZE: usize = 8; // as if `b` had been appended in a later version
        const NAME: &'static str = "V1";
        fn defaults() -> Self {
            V1 {
                struct_size: size_of::<V1>() as u32,
                a: 7,
                b: 0.5,
            }
        }
    }

    #[test]
    fn params_null_means_defaults() {
        // SAFETY: NULL is allowed.
        let v = unsafe { read_params::<V1>(ptr::null(), "p") }.unwrap();
        assert_eq!(v, V1::defaults());
    }

    #[test]
    fn params_older_caller_gets_defaults_for_newer_fields() {
        let old = V1 {
            struct_size: 8,
            a: 3,
            b: 99.0,
        };
        // SAFETY: points to a live V1 (more bytes than declared).
        let v = unsafe { read_params(&old, "p") }.unwrap();
        assert_eq!((v.a, v.b, v.struct_size), (3, 0.5, 12));
    }

    #[test]
    fn params_newer_caller_is_read_up_to_known_fields() {
        #[repr(C)]
        struct V2 {
            v1: V1,
            extra: u64,
        }
        let newer = V2 {
            v1: V1 {
                struct_size: size_of::<V2>() as u32,
                a: 4,
                b: 1.5,
            },
            extra: u64::MAX,
        };
        // SAFETY: `newer` holds struct_size readable bytes.
        let v = unsafe { read_params(&newer.v1, "p") }.unwrap();
        assert_eq!((v.a, v.b), (4, 1.5));
    }

    #[test]
    fn params_too_small_is_rejected() {
        let bad = V1 {
            struct_size: 4,
            a: 1,
            b: 1.0,
        };
        // SAFETY: points to a live V1.
        let e = unsafe { read_params(&bad, "params") }.unwrap_err();
        assert_eq!(e.status, gc_status::GC_ERR_INVALID_ARG);
        assert!(e.message.contains("struct_size is 4"), "{}", e.message);
    }

    #[test]
    fn versioned_write_keeps_caller_size_and_tail() {
        let mut out = V1 {
            struct_size: 8,
            a: 0,
            b: -1.0,
        };
        // SAFETY: `out` is writable for its declared 8 bytes.
        unsafe { write_versioned(&mut out, "o", &V1::defaults()) }.unwrap();
        assert_eq!((out.struct_size, out.a, out.b), (8, 7, -1.0));
    }

    #[test]
    fn buffer_too_small_reports_size_and_leaves_buffer() {
        let data = [1i32, 2, 3];
        let mut buf = [9i32; 2];
        let mut n = 0usize;
        // SAFETY: buf has 2 elements, n is writable.
        let e = unsafe { copy_to_buffer(&data, buf.as_mut_ptr(), 2, &mut n, false) }.unwrap_err();
        assert_eq!(e.status, gc_status::GC_ERR_BUFFER_TOO_SMALL);
        assert_eq!((n, buf), (3, [9, 9]));
        let mut text = [b'x'; 3];
        // SAFETY: text has 3 bytes: "ab" + NUL fits.
        unsafe { copy_to_buffer(b"ab", text.as_mut_ptr(), 3, &mut n, true) }.unwrap();
        assert_eq!((n, text), (2, *b"ab\0"));
        // SAFETY: NULL buffer with capacity 0 is a size query.
        let e = unsafe { copy_to_buffer(b"ab", ptr::null_mut(), 0, &mut n, true) }.unwrap_err();
        assert_eq!((e.status, n), (gc_status::GC_ERR_BUFFER_TOO_SMALL, 2));
    }

    #[test]
    fn slices_and_strings_reject_null() {
        // SAFETY: NULL with a length is rejected before any read.
        let e = unsafe { slice::<i32>(ptr::null(), 3, "tokens") }.unwrap_err();
        assert!(e.message.contains("tokens is NULL"));
        // SAFETY: len 0 never reads.
        assert!(unsafe { slice::<i32>(ptr::null(), 0, "tokens") }
            .unwrap()
            .is_empty());
        // SAFETY: NULL is rejected.
        assert!(unsafe { c_str(ptr::null(), "path") }.is_err());
        let bad = [0xffu8, 0xfe, 0];
        // SAFETY: NUL-terminated.
        let e = unsafe { c_str(bad.as_ptr().cast(), "path") }.unwrap_err();
        assert!(e.message.contains("UTF-8"));
    }
}
