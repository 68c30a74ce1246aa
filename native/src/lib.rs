//! N-API binding: exported functions only, converting values; the logic is in nvml.rs and the
//! NVML loading in dl.rs. No panic crosses the FFI boundary: every entry point runs inside
//! catch_unwind, and nothing unwraps data that came from NVML or JS.

mod amd_dl;
pub mod amdsmi;
mod dl;
pub mod edge;
mod napi;
pub mod nvml;
mod returns;
pub mod sched;
pub mod sse;

use napi::*;
use std::ffi::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

struct State {
    lib: dl::Library,
    devices: Vec<nvml::Device>,
    xids: bool,
    xid_error: Option<String>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

struct AmdState {
    lib: amd_dl::Library,
    handles: Vec<nvml::Handle>,
}

static AMD_STATE: Mutex<Option<AmdState>> = Mutex::new(None);

/// A poisoned lock only means an earlier call panicked; the library state itself is still valid.
fn state() -> MutexGuard<'static, Option<State>> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

fn amd_state() -> MutexGuard<'static, Option<AmdState>> {
    AMD_STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Which vendor library a poll reads.
#[derive(Clone, Copy)]
enum Backend {
    Nvml,
    Amd,
}

impl Backend {
    fn error_name(self, r: u32) -> &'static str {
        match self {
            Backend::Nvml => nvml::error_name(r),
            Backend::Amd => amdsmi::status_name(r),
        }
    }
}

const DEFAULT_LIBRARY: &str = "libnvidia-ml.so.1";

unsafe fn string_arg(env: napi_env, info: napi_callback_info) -> Option<String> {
    string_of(env, args::<1>(env, info)[0])
}

/** What an init's work returned: its info object, or (code, message, the library's return code). */
type InitOutcome = std::thread::Result<Result<napi_value, (&'static str, String, Option<u32>)>>;

/// The value of an init, or a thrown Error with `.code` (and the library's return code and its
/// name, under the keys the TS side reads for both vendors); a panic is an internal error.
unsafe fn init_outcome(js: &Js, backend: Backend, outcome: InitOutcome, internal: (&str, &str)) -> napi_value {
    match outcome {
        Ok(Ok(v)) => v,
        Ok(Err((code, msg, ret))) => {
            let e = js.error(code, &msg);
            if let Some(r) = ret {
                js.set(e, "nvmlReturn\0", js.num(r as f64));
                js.set(e, "nvmlError\0", js.str(backend.error_name(r)));
            }
            napi_throw(js.env, e);
            std::ptr::null_mut()
        }
        Err(_) => {
            napi_throw(js.env, js.error(internal.0, internal.1));
            std::ptr::null_mut()
        }
    }
}

fn init_info(js: &Js, s: &State) -> napi_value {
    let o = js.object();
    js.set(o, "libPath\0", js.str(&s.lib.path));
    js.set(o, "deviceCount\0", js.num(s.devices.len() as f64));
    js.set(o, "driverVersion\0", js.opt_str(s.lib.driver_version().as_deref()));
    js.set(o, "nvmlVersion\0", js.opt_str(s.lib.nvml_version().as_deref()));
    js.set(o, "xidEvents\0", js.bool(s.xids));
    js.set(o, "xidError\0", js.opt_str(s.xid_error.as_deref()));
    o
}

unsafe extern "C" fn js_init(env: napi_env, info: napi_callback_info) -> napi_value {
    let js = Js { env };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let path = string_arg(env, info).unwrap_or_else(|| DEFAULT_LIBRARY.to_string());
        let mut guard = state();
        if let Some(s) = guard.as_ref() {
            return Ok(init_info(&js, s));
        }
        match dl::Library::open(&path) {
            Ok(mut lib) => {
                let devices = match nvml::discover(&lib) {
                    Ok(d) => d,
                    Err(r) => {
                        let text = lib.error_text(r);
                        lib.close();
                        return Err(("nvml_init_failed", format!("nvmlDeviceGetCount_v2 failed: {text}"), Some(r)));
                    }
                };
                let (xids, xid_error) = match lib.watch_xids(&devices) {
                    Ok(()) => (true, None),
                    Err(e) => (false, Some(e)),
                };
                let s = State { lib, devices, xids, xid_error };
                let v = init_info(&js, &s);
                *guard = Some(s);
                Ok(v)
            }
            Err(dl::LoadError::Unavailable(msg)) => Err(("nvml_unavailable", msg, None)),
            Err(dl::LoadError::InitFailed(r, text)) => Err(("nvml_init_failed", format!("nvmlInit_v2 failed: {text}"), Some(r))),
        }
    }));
    init_outcome(&js, Backend::Nvml, outcome, ("nvml_internal", "internal error in init"))
}

struct PollWork {
    backend: Backend,
    deferred: napi_deferred,
    work: napi_async_work,
    result: Option<Result<(nvml::PollResult, u128), &'static str>>,
}

unsafe extern "C" fn poll_execute(_env: napi_env, data: *mut c_void) {
    let work = &mut *(data as *mut PollWork);
    let backend = work.backend;
    let r = catch_unwind(AssertUnwindSafe(|| {
        let t0 = Instant::now();
        let r = match backend {
            Backend::Nvml => {
                let guard = state();
                let Some(s) = guard.as_ref() else { return Err("nvml_not_initialized") };
                nvml::poll(&s.lib, &s.devices, s.xids)
            }
            Backend::Amd => {
                let guard = amd_state();
                let Some(s) = guard.as_ref() else { return Err("amdsmi_not_initialized") };
                nvml::PollResult { devices: amdsmi::poll(&s.lib, &s.handles), xids: Vec::new() }
            }
        };
        Ok((r, t0.elapsed().as_micros()))
    }));
    work.result = Some(r.unwrap_or(Err("gpu_addon_internal")));
}

const DEVICE_KEYS: [&str; 24] = [
    "index",
    "minor",
    "uuid",
    "name",
    "pciBusId",
    "utilizationGpu",
    "utilizationMemory",
    "memoryTotalBytes",
    "memoryUsedBytes",
    "memoryFreeBytes",
    "temperatureC",
    "temperatureHotspotC",
    "powerW",
    "powerLimitW",
    "smClockMhz",
    "memClockMhz",
    "eccCorrected",
    "eccUncorrected",
    "throttleReasons",
    "energyJoules",
    "mig",
    "processes",
    "error",
    "fieldErrors",
];

fn mig_js(js: &Js, m: &nvml::MigSample) -> napi_value {
    let o = js.object();
    js.set(o, "gpuInstanceId\0", js.opt_num(m.gpu_instance_id));
    js.set(o, "computeInstanceId\0", js.opt_num(m.compute_instance_id));
    js.set(o, "uuid\0", js.opt_str(m.uuid.as_deref()));
    js.set(o, "gpuInstanceSlices\0", js.opt_num(m.attributes.map(|a| a.gpu_instance_slices)));
    js.set(o, "computeInstanceSlices\0", js.opt_num(m.attributes.map(|a| a.compute_instance_slices)));
    js.set(o, "memorySizeMb\0", js.opt_num(m.attributes.map(|a| a.memory_size_mb as f64)));
    js.set(o, "utilizationGpu\0", js.opt_num(m.utilization_gpu));
    js.set(o, "memoryTotalBytes\0", js.opt_num(m.memory_total.map(|v| v as f64)));
    js.set(o, "memoryUsedBytes\0", js.opt_num(m.memory_used.map(|v| v as f64)));
    js.set(o, "memoryFreeBytes\0", js.opt_num(m.memory_free.map(|v| v as f64)));
    o
}

fn device_js(js: &Js, backend: Backend, k: &[napi_value; 24], d: &nvml::DeviceSample) -> napi_value {
    let f = |x: Option<u64>| x.map(|v| v as f64);
    let values = [
        js.num(d.index as f64),
        js.opt_num(d.minor),
        js.opt_str(d.uuid.as_deref()),
        js.opt_str(d.name.as_deref()),
        js.opt_str(d.pci_bus_id.as_deref()),
        js.opt_num(d.utilization_gpu),
        js.opt_num(d.utilization_memory),
        js.opt_num(f(d.memory_total)),
        js.opt_num(f(d.memory_used)),
        js.opt_num(f(d.memory_free)),
        js.opt_num(d.temperature_c),
        js.opt_num(d.temperature_hotspot_c),
        js.opt_num(d.power_mw.map(|mw| mw as f64 / 1000.0)),
        js.opt_num(d.power_limit_mw.map(|mw| mw as f64 / 1000.0)),
        js.opt_num(d.sm_clock_mhz),
        js.opt_num(d.mem_clock_mhz),
        js.opt_num(f(d.ecc_corrected)),
        js.opt_num(f(d.ecc_uncorrected)),
        js.opt_num(f(d.throttle_reasons)),
        js.opt_num(d.energy_mj.map(|mj| mj as f64 / 1000.0)),
        match &d.mig {
            Some(list) => js.array(list.iter().map(|m| mig_js(js, m)).collect()),
            None => js.null(),
        },
        match &d.processes {
            Some(p) => js.array(
                p.iter()
                    .map(|p| {
                        let po = js.object();
                        js.set(po, "pid\0", js.num(p.pid as f64));
                        js.set(po, "usedMemoryBytes\0", js.opt_num(p.used_memory.map(|v| v as f64)));
                        js.set(po, "gpuInstanceId\0", js.opt_num(p.gpu_instance_id));
                        js.set(po, "computeInstanceId\0", js.opt_num(p.compute_instance_id));
                        po
                    })
                    .collect(),
            ),
            None => js.null(),
        },
        d.error.as_ref().map(|e| error_js(js, backend, e)).unwrap_or_else(|| js.null()),
        js.array(d.field_errors.iter().map(|e| error_js(js, backend, e)).collect()),
    ];
    js.object_with(k, values)
}

/// A failed call: the vendor's name for its return code, the code itself, and which field it was.
/// The code's key stays `nvmlReturn` for both vendors, so the TS side reads one shape.
fn error_js(js: &Js, backend: Backend, e: &nvml::NvmlError) -> napi_value {
    let eo = js.object();
    js.set(eo, "code\0", js.str(backend.error_name(e.ret)));
    js.set(eo, "nvmlReturn\0", js.num(e.ret as f64));
    js.set(eo, "message\0", js.str(e.field));
    eo
}

unsafe extern "C" fn poll_complete(env: napi_env, _status: napi_status, data: *mut c_void) {
    let work = Box::from_raw(data as *mut PollWork);
    let js = Js { env };
    let _ = catch_unwind(AssertUnwindSafe(|| match &work.result {
        Some(Ok((r, us))) => {
            let o = js.object();
            let keys = js.keys(DEVICE_KEYS);
            js.set(o, "devices\0", js.array(r.devices.iter().map(|d| device_js(&js, work.backend, &keys, d)).collect()));
            js.set(
                o,
                "xids\0",
                js.array(
                    r.xids
                        .iter()
                        .map(|&(index, xid)| {
                            let x = js.object();
                            js.set(x, "index\0", js.num(index as f64));
                            js.set(x, "xid\0", js.num(xid as f64));
                            x
                        })
                        .collect(),
                ),
            );
            js.set(o, "elapsedUs\0", js.num(*us as f64));
            napi_resolve_deferred(env, work.deferred, o);
        }
        Some(Err(code)) => {
            napi_reject_deferred(env, work.deferred, js.error(code, code));
        }
        None => {
            napi_reject_deferred(env, work.deferred, js.error("gpu_addon_internal", "poll did not run"));
        }
    }));
    napi_delete_async_work(env, work.work);
}

unsafe extern "C" fn js_poll(env: napi_env, _info: napi_callback_info) -> napi_value {
    queue_poll(env, Backend::Nvml)
}

unsafe extern "C" fn js_amd_poll(env: napi_env, _info: napi_callback_info) -> napi_value {
    queue_poll(env, Backend::Amd)
}

/// A promise of one poll, sampled on a libuv worker thread so the event loop never waits on the driver.
unsafe fn queue_poll(env: napi_env, backend: Backend) -> napi_value {
    let js = Js { env };
    let mut deferred = std::ptr::null_mut();
    let mut promise = std::ptr::null_mut();
    if napi_create_promise(env, &mut deferred, &mut promise) != 0 {
        return std::ptr::null_mut();
    }
    let data = Box::into_raw(Box::new(PollWork { backend, deferred, work: std::ptr::null_mut(), result: None }));
    let mut work = std::ptr::null_mut();
    let name = js.str("infertel.nvml.poll");
    if napi_create_async_work(env, std::ptr::null_mut(), name, Some(poll_execute), Some(poll_complete), data as *mut c_void, &mut work) != 0 {
        let d = Box::from_raw(data);
        napi_reject_deferred(env, d.deferred, js.error("nvml_internal", "cannot create async work"));
        return promise;
    }
    (*data).work = work;
    if napi_queue_async_work(env, work) != 0 {
        napi_delete_async_work(env, work);
        let d = Box::from_raw(data);
        napi_reject_deferred(env, d.deferred, js.error("nvml_internal", "cannot queue async work"));
    }
    promise
}

unsafe extern "C" fn js_shutdown(env: napi_env, _info: napi_callback_info) -> napi_value {
    let js = Js { env };
    let closed = catch_unwind(AssertUnwindSafe(|| {
        let mut guard = state();
        match guard.take() {
            Some(mut s) => {
                s.lib.close();
                true
            }
            None => false,
        }
    }))
    .unwrap_or(false);
    js.bool(closed)
}

fn amd_init_info(js: &Js, s: &AmdState) -> napi_value {
    let o = js.object();
    js.set(o, "libPath\0", js.str(&s.lib.path));
    js.set(o, "deviceCount\0", js.num(s.handles.len() as f64));
    js.set(o, "libVersion\0", js.str(&s.lib.version));
    js.set(
        o,
        "abi\0",
        js.str(match s.lib.abi {
            amdsmi::Abi::Rocm6 => "rocm6",
            amdsmi::Abi::Rocm7 => "rocm7",
        }),
    );
    o
}

const DEFAULT_AMD_LIBRARY: &str = "libamd_smi.so";

unsafe extern "C" fn js_amd_init(env: napi_env, info: napi_callback_info) -> napi_value {
    let js = Js { env };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let path = string_arg(env, info).unwrap_or_else(|| DEFAULT_AMD_LIBRARY.to_string());
        let mut guard = amd_state();
        if let Some(s) = guard.as_ref() {
            return Ok(amd_init_info(&js, s));
        }
        match amd_dl::Library::open(&path) {
            Ok(mut lib) => {
                let handles = match amdsmi::Api::processors(&lib) {
                    Ok(h) => h,
                    Err(r) => {
                        let text = lib.error_text(r);
                        lib.close();
                        return Err(("amdsmi_init_failed", format!("amdsmi_get_processor_handles failed: {text}"), Some(r)));
                    }
                };
                let s = AmdState { lib, handles };
                let v = amd_init_info(&js, &s);
                *guard = Some(s);
                Ok(v)
            }
            Err(amd_dl::LoadError::Unavailable(msg)) => Err(("amdsmi_unavailable", msg, None)),
            Err(amd_dl::LoadError::UnknownAbi(msg)) => Err(("amdsmi_abi_unknown", msg, None)),
            Err(amd_dl::LoadError::InitFailed(r, text)) => Err(("amdsmi_init_failed", format!("amdsmi_init failed: {text}"), Some(r))),
        }
    }));
    init_outcome(&js, Backend::Amd, outcome, ("gpu_addon_internal", "internal error in amdInit"))
}

unsafe extern "C" fn js_amd_shutdown(env: napi_env, _info: napi_callback_info) -> napi_value {
    let js = Js { env };
    let closed = catch_unwind(AssertUnwindSafe(|| match amd_state().take() {
        Some(mut s) => {
            s.lib.close();
            true
        }
        None => false,
    }))
    .unwrap_or(false);
    js.bool(closed)
}

/// The native data paths started, by id (an index here; a stopped one leaves its slot empty).
static EDGES: Mutex<Vec<Option<edge::Edge>>> = Mutex::new(Vec::new());

fn edges() -> MutexGuard<'static, Vec<Option<edge::Edge>>> {
    EDGES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Up to N arguments of a call (missing ones are null pointers).
unsafe fn args<const N: usize>(env: napi_env, info: napi_callback_info) -> [napi_value; N] {
    let mut argc: usize = N;
    let mut argv = [std::ptr::null_mut(); N];
    napi_get_cb_info(env, info, &mut argc, argv.as_mut_ptr(), std::ptr::null_mut(), std::ptr::null_mut());
    argv
}

unsafe fn type_of(env: napi_env, v: napi_value) -> c_int {
    let mut t: c_int = -1;
    if v.is_null() || napi_typeof(env, v, &mut t) != 0 {
        return -1;
    }
    t
}

unsafe fn bool_of(env: napi_env, v: napi_value) -> bool {
    let mut b = false;
    type_of(env, v) == NAPI_BOOLEAN && napi_get_value_bool(env, v, &mut b) == 0 && b
}

unsafe fn number_of(env: napi_env, v: napi_value) -> Option<f64> {
    let mut x = 0.0;
    (type_of(env, v) == NAPI_NUMBER && napi_get_value_double(env, v, &mut x) == 0).then_some(x)
}

unsafe fn string_of(env: napi_env, v: napi_value) -> Option<String> {
    if type_of(env, v) != NAPI_STRING {
        return None;
    }
    let mut len: usize = 0;
    napi_get_value_string_utf8(env, v, std::ptr::null_mut(), 0, &mut len);
    let mut buf = vec![0u8; len + 1];
    napi_get_value_string_utf8(env, v, buf.as_mut_ptr() as *mut c_char, buf.len(), &mut len);
    buf.truncate(len);
    String::from_utf8(buf).ok()
}

/// The bytes of a Buffer, or of a string as UTF-8.
unsafe fn bytes_of(env: napi_env, v: napi_value) -> Option<Vec<u8>> {
    let mut is_buffer = false;
    if !v.is_null() && napi_is_buffer(env, v, &mut is_buffer) == 0 && is_buffer {
        let mut data = std::ptr::null_mut();
        let mut len = 0usize;
        if napi_get_buffer_info(env, v, &mut data, &mut len) != 0 {
            return None;
        }
        return Some(if len == 0 { Vec::new() } else { std::slice::from_raw_parts(data as *const u8, len).to_vec() });
    }
    string_of(env, v).map(String::into_bytes)
}

unsafe fn number_arg(env: napi_env, info: napi_callback_info) -> Option<f64> {
    number_of(env, args::<1>(env, info)[0])
}

/**
 * `listen target maxBodyBytes upstreamTimeoutMs [wait|tell|tell:prompt [maxConcurrent [read:STALL_MS:MARK_EVERY:BOUND,BOUND,...]]]`,
 * space-separated (the TS wrapper writes it). `tell:prompt`: as `tell`, and the policy is handed each
 * sent request's prompt too (edge.rs's policy_body). The last part has the loop read 2xx event streams
 * itself (sse.rs): the stall limit, how often a content read's time is marked (0: never), and the
 * inter-token histogram's bounds in ms.
 */
fn edge_config(spec: &str) -> Option<edge::Config> {
    let mut parts = spec.split(' ');
    let listen = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let max_body = parts.next()?.parse().ok()?;
    let timeout_ms: u64 = parts.next()?.parse().ok()?;
    let (tell_after, keep_prompt) = match parts.next() {
        None | Some("wait") => (false, false),
        Some("tell") => (true, false),
        Some("tell:prompt") => (true, true),
        Some(_) => return None,
    };
    // proxy.maxConcurrent's default.
    let max_concurrent = match parts.next() {
        None => 4096,
        Some(n) => n.parse().ok()?,
    };
    let reading = match parts.next() {
        None => None,
        Some(r) => Some(std::sync::Arc::new(reading_rules(r)?)),
    };
    if parts.next().is_some() {
        return None;
    }
    Some(edge::Config {
        listen,
        target,
        max_body,
        upstream_timeout: std::time::Duration::from_millis(timeout_ms),
        admit: None,
        free_returned: None,
        tell_after,
        keep_prompt,
        max_concurrent,
        reading,
    })
}

fn reading_rules(part: &str) -> Option<sse::ReadingRules> {
    let mut fields = part.strip_prefix("read:")?.split(':');
    let stall_after_ms: f64 = fields.next()?.parse().ok()?;
    let mark_every = fields.next()?.parse().ok()?;
    let bounds = fields.next()?;
    let gap_bounds_ms = if bounds.is_empty() { Vec::new() } else { bounds.split(',').map(|b| b.parse().ok()).collect::<Option<Vec<f64>>>()? };
    let sorted = gap_bounds_ms.windows(2).all(|w| w[0] < w[1]) && gap_bounds_ms.iter().all(|b| b.is_finite());
    (sorted && stall_after_ms >= 0.0 && fields.next().is_none()).then_some(sse::ReadingRules { gap_bounds_ms, mark_every, stall_after_ms })
}

/// The policy's JS function, callable from the loop's thread (Node-API queues each call to the main thread).
struct Policy {
    func: napi_threadsafe_function,
    /** Batches JS has read, for the loop to free (returns.rs says why). */
    spent: Arc<returns::Returns<Batch>>,
}
// SAFETY: a thread-safe function is made to be called from any thread; only the handle moves.
unsafe impl Send for Policy {}

impl Policy {
    fn hand(&self, requests: Vec<edge::Admission>, seen: Vec<edge::Tap>, bytes: Vec<u8>) {
        let node = self.spent.wrap((requests, seen, bytes));
        // Non-blocking: the queue is unbounded, and each connection has at most one request with the policy.
        if unsafe { napi_call_threadsafe_function(self.func, node as *mut std::ffi::c_void, 0) } != 0 {
            drop(unsafe { Box::from_raw(node) });
        }
    }
}

type Batch = (Vec<edge::Admission>, Vec<edge::Tap>, Vec<u8>);

impl Drop for Policy {
    fn drop(&mut self) {
        // The loop that called it has ended: Node may free the function.
        unsafe { napi_release_threadsafe_function(self.func, 0) };
    }
}

unsafe fn buffer(env: napi_env, bytes: &[u8]) -> napi_value {
    let mut v = std::ptr::null_mut();
    let mut out = std::ptr::null_mut();
    napi_create_buffer_copy(env, bytes.len(), bytes.as_ptr() as *const std::ffi::c_void, &mut out, &mut v);
    v
}

/// napi_typedarray_type's napi_float64_array.
const NAPI_FLOAT64_ARRAY: c_int = 8;

/**
 * On the main thread: policy(requests, seen). requests: { index, strings, bodies }, packed: index
 * holds four numbers per request (token; at; flags, 1 waits, 2 usage injected, 4 answered; its
 * header fields' count), strings per request its request id ("" when it waits), method, target,
 * then each field's name and value, and bodies a Buffer each (addon.ts makes the EdgeRequest
 * objects). seen: { index: Float64Array, bytes: Buffer, notes }, where index holds four numbers
 * per thing seen (kind 0 head, 1 data, 2 end; token; at; the data's byte count), bytes the data
 * end to end, and notes each head's { status, headers } and each end's { outcome } in order. A
 * batch carries tens of data reads: a number each in index and a slice of one Buffer, where each
 * was an object with a Buffer of its own. Objects made here cost more than the same objects made
 * in JS (each property set from C looks its key up and moves the object to a new shape), so a
 * request is numbers and strings here.
 */
unsafe extern "C" fn call_policy(env: napi_env, func: napi_value, _context: *mut std::ffi::c_void, data: *mut std::ffi::c_void) {
    let node = data as *mut returns::Node<Batch>;
    let _ = catch_unwind(AssertUnwindSafe(|| hand_to_js(env, func, &(*node).value)));
    returns::give_back(node);
}

/** Header fields as JS's flat [name, value, name, ...]. */
fn flat(js: &Js, headers: &[(String, String)]) -> napi_value {
    js.array(headers.iter().flat_map(|(k, v)| [js.str(k), js.str(v)]).collect())
}

unsafe fn float64_array(env: napi_env, numbers: &[f64]) -> napi_value {
    let mut store: *mut std::ffi::c_void = std::ptr::null_mut();
    let mut array_buffer = std::ptr::null_mut();
    napi_create_arraybuffer(env, numbers.len() * 8, &mut store, &mut array_buffer);
    if !store.is_null() && !numbers.is_empty() {
        std::ptr::copy_nonoverlapping(numbers.as_ptr(), store as *mut f64, numbers.len());
    }
    let mut array = std::ptr::null_mut();
    napi_create_typedarray(env, NAPI_FLOAT64_ARRAY, numbers.len(), array_buffer, 0, &mut array);
    array
}

/**
 * The taps' index as a Float64Array (four numbers each), and the notes of heads and ends. A head
 * whose body the loop reads carries no fields (nothing reads them); the ends' readings are views of
 * one ArrayBuffer for the batch, not one each.
 */
unsafe fn seen_to_js(js: &Js, taps: &[edge::Tap], bytes: &[u8]) -> napi_value {
    let env = js.env;
    let head_keys = js.keys(["status", "headers", "read"]);
    let end_keys = js.keys(["outcome", "read"]);
    // Sized first, so each end's reading is copied once, straight into the batch's ArrayBuffer.
    let reading_count: usize = taps
        .iter()
        .map(|t| match &t.what {
            edge::Seen::End(_, Some(r)) => r.len(),
            _ => 0,
        })
        .sum();
    let mut store: *mut std::ffi::c_void = std::ptr::null_mut();
    let mut readings_buffer = std::ptr::null_mut();
    if reading_count > 0 {
        napi_create_arraybuffer(env, reading_count * 8, &mut store, &mut readings_buffer);
    }
    let mut offset = 0;
    let mut notes = Vec::new();
    let mut numbers = Vec::with_capacity(taps.len() * 4);
    for t in taps {
        let (kind, length) = match &t.what {
            edge::Seen::Head { status, headers, read } => {
                let fields = if *read { js.array(Vec::new()) } else { flat(js, headers) };
                notes.push(js.object_with(&head_keys, [js.num(*status as f64), fields, js.bool(*read)]));
                (0.0, 0.0)
            }
            edge::Seen::Data(n) => (1.0, *n as f64),
            edge::Seen::End(o, read) => {
                let read = match read {
                    Some(r) if !store.is_null() => {
                        std::ptr::copy_nonoverlapping(r.as_ptr(), (store as *mut f64).add(offset), r.len());
                        let mut view = std::ptr::null_mut();
                        napi_create_typedarray(env, NAPI_FLOAT64_ARRAY, r.len(), readings_buffer, offset * 8, &mut view);
                        offset += r.len();
                        view
                    }
                    _ => js.null(),
                };
                notes.push(js.object_with(&end_keys, [js.str(o), read]));
                (2.0, 0.0)
            }
        };
        numbers.extend_from_slice(&[kind, t.token as f64, t.at_ms, length]);
    }
    let index = float64_array(env, &numbers);
    let keys = js.keys(["index", "bytes", "notes"]);
    js.object_with(&keys, [index, buffer(env, bytes), js.array(notes)])
}

/** Flags of a packed request (see call_policy). */
const REQUEST_WAITS: f64 = 1.0;
const REQUEST_USAGE_INJECTED: f64 = 2.0;
const REQUEST_ANSWERED: f64 = 4.0;

unsafe fn hand_to_js(env: napi_env, func: napi_value, (requests, seen, bytes): &Batch) {
    if env.is_null() || func.is_null() {
        return;
    }
    let js = Js { env };
    let mut numbers = Vec::with_capacity(requests.len() * 4);
    let mut strings = Vec::new();
    let mut bodies = Vec::with_capacity(requests.len());
    for a in requests {
        let flags = (if a.waits { REQUEST_WAITS } else { 0.0 })
            + (if a.usage_injected { REQUEST_USAGE_INJECTED } else { 0.0 })
            + (if a.answered { REQUEST_ANSWERED } else { 0.0 });
        numbers.extend_from_slice(&[a.token as f64, a.at_ms, flags, a.headers.len() as f64]);
        strings.push(js.str(if a.waits { "" } else { &a.request_id }));
        strings.push(js.str(&a.method));
        strings.push(js.str(&a.target));
        for (k, v) in &a.headers {
            strings.push(js.str(k));
            strings.push(js.str(v));
        }
        bodies.push(buffer(env, &a.body));
    }
    let keys = js.keys(["index", "strings", "bodies"]);
    let requests = js.object_with(&keys, [float64_array(env, &numbers), js.array(strings), js.array(bodies)]);
    let seen = seen_to_js(&js, seen, bytes);
    let mut undefined = std::ptr::null_mut();
    napi_get_undefined(env, &mut undefined);
    let argv = [requests, seen];
    let mut result = std::ptr::null_mut();
    napi_call_function(env, undefined, func, 2, argv.as_ptr(), &mut result);
}

unsafe extern "C" fn js_edge_start(env: napi_env, info: napi_callback_info) -> napi_value {
    let js = Js { env };
    let [spec, policy] = args::<2>(env, info);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut cfg = string_of(env, spec).as_deref().and_then(edge_config).ok_or("edge_bad_config")?;
        if type_of(env, policy) == NAPI_FUNCTION {
            let mut tsfn = std::ptr::null_mut();
            let name = js.str("infertel-edge-policy");
            if napi_create_threadsafe_function(
                env,
                policy,
                std::ptr::null_mut(),
                name,
                0,
                1,
                std::ptr::null_mut(),
                None,
                std::ptr::null_mut(),
                Some(call_policy),
                &mut tsfn,
            ) != 0
            {
                return Err("edge_start_failed");
            }
            // The data path's threads do not keep Node running; whoever started it does.
            napi_unref_threadsafe_function(env, tsfn);
            let spent = returns::Returns::new();
            let p = Policy { func: tsfn, spent: spent.clone() };
            cfg.admit = Some(Box::new(move |requests, seen, bytes| p.hand(requests, seen, bytes)));
            cfg.free_returned = Some(Box::new(move || {
                spent.free_returned();
            }));
        }
        let e = edge::Edge::start(cfg).map_err(|_| "edge_start_failed")?;
        let address = e.local.to_string();
        let mut all = edges();
        all.push(Some(e));
        Ok::<_, &str>((all.len() - 1, address))
    }));
    match outcome {
        Ok(Ok((id, address))) => {
            let o = js.object();
            js.set(o, "id\0", js.num(id as f64));
            js.set(o, "address\0", js.str(&address));
            o
        }
        Ok(Err(code)) => {
            napi_throw(env, js.error(code, "the native data path did not start (bad spec, or the address is taken)"));
            std::ptr::null_mut()
        }
        Err(_) => {
            napi_throw(env, js.error("edge_internal", "internal error in edgeStart"));
            std::ptr::null_mut()
        }
    }
}

/** readingLayout(): where each figure sits in a stream's reading (sse.rs's `slot`), by name. */
unsafe extern "C" fn js_reading_layout(env: napi_env, _info: napi_callback_info) -> napi_value {
    let js = Js { env };
    let keys = js.keys(sse::slot::NAMED.map(|(name, _)| name));
    js.object_with(&keys, sse::slot::NAMED.map(|(_, at)| js.num(at as f64)))
}

unsafe extern "C" fn js_edge_stats(env: napi_env, info: napi_callback_info) -> napi_value {
    let js = Js { env };
    catch_unwind(AssertUnwindSafe(|| edge_stats(&js, number_arg(env, info).unwrap_or(-1.0)))).unwrap_or_else(|_| js.null())
}

fn edge_stats(js: &Js, id: f64) -> napi_value {
    let all = edges();
    let Some(Some(e)) = (id >= 0.0).then(|| all.get(id as usize)).flatten() else { return js.null() };
    let s = &e.stats;
    let o = js.object();
    let get = |a: &std::sync::atomic::AtomicU64| js.num(a.load(std::sync::atomic::Ordering::Relaxed) as f64);
    js.set(o, "requests\0", get(&s.requests));
    js.set(o, "open\0", get(&s.open));
    js.set(o, "bodyTooLarge\0", get(&s.body_too_large));
    js.set(o, "badRequest\0", get(&s.bad_request));
    js.set(o, "upstreamRefused\0", get(&s.upstream_refused));
    js.set(o, "upstreamTimeout\0", get(&s.upstream_timeout));
    js.set(o, "engineReset\0", get(&s.engine_reset));
    js.set(o, "clientAbort\0", get(&s.client_abort));
    js.set(o, "engineConnections\0", get(&s.engine_connections));
    js.set(o, "overloaded\0", get(&s.overloaded));
    js.set(o, "policyTimeout\0", get(&s.policy_timeout));
    js.set(o, "endsTold\0", get(&s.ends_told));
    o
}

fn edge_decide(id: f64, d: edge::Decision) -> bool {
    let all = edges();
    match (id >= 0.0).then(|| all.get(id as usize)).flatten() {
        Some(Some(e)) => {
            e.decide(d);
            true
        }
        _ => false,
    }
}

/// edgeForward(id, token, upstreamFields, clientFields, body?, stripUsage?): send the request on, with these fields.
unsafe extern "C" fn js_edge_forward(env: napi_env, info: napi_callback_info) -> napi_value {
    let js = Js { env };
    let [id, token, up, client, body, strip] = args::<6>(env, info);
    let ok = catch_unwind(AssertUnwindSafe(|| {
        let (Some(id), Some(token)) = (number_of(env, id), number_of(env, token)) else { return false };
        let d = edge::Decision::Forward {
            token: token as u64,
            upstream_fields: edge::fields_of(&string_of(env, up).unwrap_or_default()),
            client_fields: edge::fields_of(&string_of(env, client).unwrap_or_default()),
            body: bytes_of(env, body),
            strip_usage: bool_of(env, strip),
        };
        edge_decide(id, d)
    }))
    .unwrap_or(false);
    js.bool(ok)
}

/// edgeAnswer(id, token, response): answer the client with these bytes (a whole HTTP/1.1 response).
unsafe extern "C" fn js_edge_answer(env: napi_env, info: napi_callback_info) -> napi_value {
    let js = Js { env };
    let [id, token, response] = args::<3>(env, info);
    let ok = catch_unwind(AssertUnwindSafe(|| {
        let (Some(id), Some(token), Some(response)) = (number_of(env, id), number_of(env, token), bytes_of(env, response)) else { return false };
        edge_decide(id, edge::Decision::Answer { token: token as u64, response })
    }))
    .unwrap_or(false);
    js.bool(ok)
}

unsafe extern "C" fn js_edge_stop(env: napi_env, info: napi_callback_info) -> napi_value {
    let js = Js { env };
    let id = number_arg(env, info).unwrap_or(-1.0);
    let stopped = catch_unwind(AssertUnwindSafe(|| {
        let taken = (id >= 0.0).then(|| edges().get_mut(id as usize).and_then(Option::take)).flatten();
        // Joined outside the lock: the acceptor may take a moment to see the flag.
        taken.map(|mut e| e.stop()).is_some()
    }))
    .unwrap_or(false);
    js.bool(stopped)
}

/**
 * idleOtherThreads(): every thread but the data path's loops (and their launcher) under SCHED_IDLE
 * (sched.rs). Returns { idled, kept, failed, error }, error the first refusal's text or null.
 */
unsafe extern "C" fn js_idle_other_threads(env: napi_env, _info: napi_callback_info) -> napi_value {
    let js = Js { env };
    let done = catch_unwind(sched::idle_all_but_kept).unwrap_or_else(|_| Err(std::io::Error::other("panicked"))).unwrap_or_else(|e| sched::Idled {
        failed: 1,
        error: Some(e.to_string()),
        ..Default::default()
    });
    let o = js.object();
    js.set(o, "idled\0", js.num(done.idled as f64));
    js.set(o, "kept\0", js.num(done.kept as f64));
    js.set(o, "failed\0", js.num(done.failed as f64));
    js.set(o, "error\0", js.opt_str(done.error.as_deref()));
    o
}

/**
 * sseRead(target, rules, bytes, reads, endAt, outcome): what the loop reads of one event stream
 * (StreamReading::summary), for the test that holds it to stream.ts. `rules` is edgeStart's
 * `read:` part; `reads` is `LENGTH@TIME` per read, space-separated, over `bytes` end to end.
 */
unsafe extern "C" fn js_sse_read(env: napi_env, info: napi_callback_info) -> napi_value {
    let js = Js { env };
    let [target, rules, bytes, reads, end_at, outcome] = args::<6>(env, info);
    let summary = catch_unwind(AssertUnwindSafe(|| {
        let rules = reading_rules(&string_of(env, rules)?)?;
        let bytes = bytes_of(env, bytes)?;
        let mut r = sse::StreamReading::new(sse::route_of(&string_of(env, target)?), std::sync::Arc::new(rules));
        let mut offset = 0usize;
        for read in string_of(env, reads)?.split_whitespace() {
            let (n, t) = read.split_once('@')?;
            let n: usize = n.parse().ok()?;
            r.push(bytes.get(offset..offset + n)?, t.parse().ok()?);
            offset += n;
        }
        let end_at = number_of(env, end_at)?;
        if matches!(string_of(env, outcome)?.as_str(), "complete" | "engine_reset") {
            r.finish(end_at);
        } else {
            r.end(end_at);
        }
        Some(r.summary())
    }));
    match summary {
        Ok(Some(s)) => float64_array(env, &s),
        _ => js.null(),
    }
}

unsafe fn export(env: napi_env, exports: napi_value, name: &'static str, cb: unsafe extern "C" fn(napi_env, napi_callback_info) -> napi_value) {
    let mut f = std::ptr::null_mut();
    napi_create_function(env, name.as_ptr() as *const c_char, name.len() - 1, Some(cb), std::ptr::null_mut(), &mut f);
    napi_set_named_property(env, exports, name.as_ptr() as *const c_char, f);
}

/// Node looks this symbol up after dlopen (what NAPI_MODULE_INIT emits in C).
///
/// # Safety
/// Called by Node only, once per environment, with that environment's `env` and `exports`.
#[no_mangle]
pub unsafe extern "C" fn napi_register_module_v1(env: napi_env, exports: napi_value) -> napi_value {
    // Before anything can be idled: see sched.rs. Failing here, the first edgeStart tries again.
    let _ = sched::launcher();
    export(env, exports, "init\0", js_init);
    export(env, exports, "poll\0", js_poll);
    export(env, exports, "shutdown\0", js_shutdown);
    export(env, exports, "amdInit\0", js_amd_init);
    export(env, exports, "amdPoll\0", js_amd_poll);
    export(env, exports, "amdShutdown\0", js_amd_shutdown);
    export(env, exports, "edgeStart\0", js_edge_start);
    export(env, exports, "edgeStats\0", js_edge_stats);
    export(env, exports, "edgeStop\0", js_edge_stop);
    export(env, exports, "edgeForward\0", js_edge_forward);
    export(env, exports, "edgeAnswer\0", js_edge_answer);
    export(env, exports, "sseRead\0", js_sse_read);
    export(env, exports, "readingLayout\0", js_reading_layout);
    export(env, exports, "idleOtherThreads\0", js_idle_other_threads);
    exports
}

/// The Node-API version the addon targets (promises and async work are in 1+).
#[no_mangle]
pub extern "C" fn node_api_module_get_api_version_v1() -> i32 {
    8
}
