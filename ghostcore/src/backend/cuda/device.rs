//! The CUDA device: driver probing, context, stream, the embedded kernel module, and the
//! guard that turns every cudarc failure (error or panic) into [`Error::Cuda`].

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Once};

use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaGraph, CudaSlice, CudaStream, DeviceRepr, DriverError,
    ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;

use super::kernels::{ALL_KERNELS, FATBIN};
use crate::{Error, Result};

/// A CUDA graph recorded on a backend's stream.
pub struct RecordedGraph(CudaGraph);

// SAFETY: the graph and its executable are driver handles of the backend's context, which the
// driver API lets any thread use; cudarc's `CudaGraph::launch` binds that context to the
// calling thread first. The owner (`CudaForward`, itself used by one thread at a time through
// `&mut`) never launches it concurrently.
unsafe impl Send for RecordedGraph {}

/// What the driver reports about the device in use.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    /// (major, minor), e.g. (9, 0) for Hopper.
    pub compute_capability: (i32, i32),
    pub total_memory_bytes: usize,
    pub multiprocessor_count: i32,
}

/// A CUDA device with GhostCore's kernels loaded. All work goes to one stream, in order.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    functions: HashMap<&'static str, CudaFunction>,
    info: DeviceInfo,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Runs one cudarc call, converting both its error and a panic inside it (cudarc panics when
/// libcuda or one of its symbols is missing, and on some argument mismatches) into
/// [`Error::Cuda`]; out-of-memory becomes [`Error::OutOfMemory`].
pub(crate) fn guard<T>(
    what: &str,
    f: impl FnOnce() -> std::result::Result<T, DriverError>,
) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(driver_error(what, e)),
        Err(payload) => Err(Error::Cuda(format!(
            "{what}: cudarc panicked: {}",
            panic_message(&*payload)
        ))),
    }
}

fn driver_error(what: &str, e: DriverError) -> Error {
    if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
        Error::OutOfMemory(format!("{what}: device memory exhausted"))
    } else {
        Error::Cuda(format!("{what}: {e:?}"))
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Whether `libcuda` can be opened at all. Only dlopens the library; calls no driver symbol.
pub fn driver_present() -> bool {
    // SAFETY: `is_culib_present` only attempts `dlopen` of the driver library candidates and
    // drops the handles; it does not call into the library.
    catch_unwind(|| unsafe { sys::is_culib_present() }).unwrap_or(false)
}

fn note_cpu_fallback(reason: &str) {
    static NOTE: Once = Once::new();
    NOTE.call_once(|| eprintln!("ghostcore: no CUDA driver: running on CPU ({reason})"));
}

impl CudaBackend {
    /// The first CUDA device, or `None` (after a one-time note on stderr) when there is no
    /// driver library or no device. Errors are for a device that exists but cannot be used
    /// (context creation or kernel loading failed).
    pub fn try_new() -> Result<Option<CudaBackend>> {
        Self::try_new_on(0)
    }

    /// Like [`CudaBackend::try_new`] for device `ordinal`.
    pub fn try_new_on(ordinal: usize) -> Result<Option<CudaBackend>> {
        if !driver_present() {
            note_cpu_fallback("libcuda not found");
            return Ok(None);
        }
        let count = match guard("cuInit/cuDeviceGetCount", CudaContext::device_count) {
            Ok(n) => n,
            Err(e) => {
                note_cpu_fallback(&e.to_string());
                return Ok(None);
            }
        };
        if count <= 0 {
            note_cpu_fallback("no CUDA device");
            return Ok(None);
        }
        if ordinal >= count as usize {
            crate::bail!(
                InvalidArgument,
                "CUDA device {ordinal} requested, {count} present"
            );
        }
        let ctx = guard("cuCtxCreate", || CudaContext::new(ordinal))?;
        // SAFETY: every buffer of this backend is used only on `stream`, the one stream
        // created here, so cudarc's cross-stream event tracking is not needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = guard("cuStreamCreate", || ctx.new_stream())?;
        let module = guard("cuModuleLoadData (embedded fatbin)", || {
            ctx.load_module(Ptx::from_binary(FATBIN.to_vec()))
        })?;
        let mut functions = HashMap::with_capacity(ALL_KERNELS.len());
        for &name in ALL_KERNELS {
            let f = guard(&format!("cuModuleGetFunction({name})"), || {
                module.load_function(name)
            })?;
            functions.insert(name, f);
        }
        let info = DeviceInfo {
            ordinal,
            name: guard("cuDeviceGetName", || ctx.name())?,
            compute_capability: guard("cuDeviceGetAttribute", || ctx.compute_capability())?,
            total_memory_bytes: guard("cuDeviceTotalMem", || ctx.total_mem())?,
            multiprocessor_count: guard("cuDeviceGetAttribute", || {
                ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            })?,
        };
        Ok(Some(CudaBackend {
            ctx,
            stream,
            functions,
            info,
        }))
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The loaded kernel `name` (one of [`ALL_KERNELS`]).
    pub(crate) fn function(&self, name: &str) -> Result<&CudaFunction> {
        self.functions.get(name).ok_or_else(|| {
            Error::Internal(format!("CUDA kernel {name} not in the embedded module"))
        })
    }

    /// Records the work `f` queues on the stream into a CUDA graph instead of running it.
    /// Nothing may synchronize inside `f`. On error the capture is ended and discarded.
    pub fn capture_graph(&self, f: impl FnOnce() -> Result<()>) -> Result<RecordedGraph> {
        guard("cuStreamBeginCapture", || {
            self.stream
                .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        })?;
        let recorded = f();
        let graph = guard("cuStreamEndCapture", || {
            self.stream.end_capture(sys::CUgraphInstantiate_flags(0))
        });
        recorded?;
        match graph? {
            Some(g) => Ok(RecordedGraph(g)),
            None => Err(Error::Cuda("stream capture recorded no graph".into())),
        }
    }

    /// Queues a replay of `graph` on the stream.
    pub fn launch_graph(&self, graph: &RecordedGraph) -> Result<()> {
        guard("cuGraphLaunch", || graph.0.launch())
    }

    /// Waits for all queued work; reports asynchronous kernel faults.
    pub fn synchronize(&self) -> Result<()> {
        guard("cuStreamSynchronize", || self.stream.synchronize())
    }

    /// (free, total) device memory in bytes.
    pub fn memory_info(&self) -> Result<(usize, usize)> {
        guard("cuMemGetInfo", || self.ctx.mem_get_info())
    }

    /// A zeroed device buffer of `len` elements.
    pub(crate) fn alloc_zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<T>> {
        // cudarc rejects zero-length allocations on some paths; keep at least one element.
        guard("cuMemAlloc", || self.stream.alloc_zeros::<T>(len.max(1)))
    }

    /// Copies `src` to a new device buffer with `pad` extra zeroed elements at the end.
    pub(crate) fn upload_padded<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        src: &[T],
        pad: usize,
    ) -> Result<CudaSlice<T>> {
        let mut dst = self.alloc_zeros::<T>(src.len() + pad)?;
        if !src.is_empty() {
            guard("cuMemcpyHtoD", || {
                let mut view = dst.slice_mut(0..src.len());
                self.stream.memcpy_htod(src, &mut view)
            })?;
        }
        Ok(dst)
    }

    /// Sets every element of `dst` to zero (queued on the stream).
    pub(crate) fn memset_zero<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        dst: &mut CudaSlice<T>,
    ) -> Result<()> {
        guard("cuMemsetD8", || self.stream.memset_zeros(dst))
    }

    /// Copies `src` (device) into `dst` (host); both must have the same length.
    pub(crate) fn download<T: DeviceRepr>(
        &self,
        src: &CudaSlice<T>,
        len: usize,
        dst: &mut [T],
    ) -> Result<()> {
        if dst.len() != len || len > src.len() {
            crate::bail!(
                InvalidArgument,
                "download of {len} elements into a host slice of {}",
                dst.len()
            );
        }
        if len == 0 {
            return Ok(());
        }
        guard("cuMemcpyDtoH", || {
            let view = src.slice(0..len);
            self.stream.memcpy_dtoh(&view, dst)
        })?;
        self.synchronize()
    }

    /// Copies `src` (host) into the first `src.len()` elements of `dst`.
    pub(crate) fn upload_into<T: DeviceRepr>(
        &self,
        src: &[T],
        dst: &mut CudaSlice<T>,
    ) -> Result<()> {
        if src.len() > dst.len() {
            crate::bail!(
                InvalidArgument,
                "upload of {} elements into a device buffer of {}",
                src.len(),
                dst.len()
            );
        }
        if src.is_empty() {
            return Ok(());
        }
        guard("cuMemcpyHtoD", || {
            let mut view = dst.slice_mut(0..src.len());
            self.stream.memcpy_htod(src, &mut view)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without a driver (this project's CI), construction must report "no CUDA"
    /// cleanly, neither erroring nor panicking. With a driver, it must load every kernel.
    #[test]
    fn try_new_without_driver_is_none_not_panic() {
        let result = std::panic::catch_unwind(CudaBackend::try_new);
        let backend = result.expect("CudaBackend::try_new panicked");
        if !driver_present() {
            assert!(
                matches!(backend, Ok(None)),
                "expected Ok(None) without libcuda, got {backend:?}"
            );
        } else {
            match backend {
                Ok(Some(b)) => assert!(b.functions.len() == ALL_KERNELS.len()),
                Ok(None) => eprintln!("libcuda present but no device: Ok(None)"),
                Err(e) => panic!("driver present but backend failed: {e}"),
            }
        }
    }

    #[test]
    fn guard_turns_panics_into_cuda_errors() {
        let r: Result<()> = guard("test call", || {
            panic!("Unable to dynamically load the \"cuda\" shared library")
        });
        match r {
            Err(Error::Cuda(msg)) => {
                assert!(msg.contains("test call") && msg.contains("Unable to dynamically load"))
            }
            other => panic!("expected Error::Cuda, got {other:?}"),
        }
    }

    #[test]
    fn embedded_fatbin_is_a_fatbin() {
        // fatbin header magic 0xBA55ED50, little-endian (fatbinary.h FATBIN_MAGIC).
        assert!(FATBIN.len() > 16);
        assert_eq!(&FATBIN[..4], &0xBA55_ED50u32.to_le_bytes());
    }
}
