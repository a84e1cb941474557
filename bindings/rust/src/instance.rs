//! One instantiated module: a wasmtime `Store` with its exports, serving one call at a time
//! (bindings/ABI.md sections 3 to 5).

use wasmtime::{InstancePre, Memory, Store, StoreLimits, StoreLimitsBuilder, TypedFunc};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::WasiCtxBuilder;

use crate::{Error, ABI_VERSION, MAX_INPUT_BYTES, OPERATIONS};

/// What a store holds: the WASI preview 1 context and the memory cap.
pub(crate) struct Host {
    pub(crate) wasi: WasiP1Ctx,
    limits: StoreLimits,
}

/// The input buffer an instance keeps from call to call (ABI section 5 lets a host reuse one):
/// at least KEPT_INPUT_MIN bytes, and none for inputs above KEPT_INPUT_MAX, whose buffer is freed
/// after the call so that one large call does not pin its size in the instance.
const KEPT_INPUT_MIN: usize = 4 << 10;
const KEPT_INPUT_MAX: usize = 256 << 10;

/// How much of what the Go runtime writes to fd 1 and 2 (the text of a fatal error) is kept for
/// the error of a trap.
const CONSOLE_CAPACITY: usize = 16 << 10;

type Op = TypedFunc<(u32, u32), u64>;
type HandleOp = TypedFunc<(u32, u32, u32), u64>;

pub(crate) struct Instance {
    store: Store<Host>,
    memory: Memory,
    alloc: TypedFunc<u32, u32>,
    free: TypedFunc<u32, ()>,
    ops: Vec<Op>, // by index in OPERATIONS
    tracker_new: Op,
    tracker_plan: HandleOp,
    tracker_observe: HandleOp,
    tracker_free: TypedFunc<u32, u32>,
    console: MemoryOutputPipe,
    in_ptr: u32,
    in_cap: usize,
    /// A call trapped or the module misbehaved: the instance must not be used again.
    pub(crate) broken: bool,
}

/// Which export a call goes to.
#[derive(Clone, Copy)]
pub(crate) enum Export {
    Op(usize),
    TrackerNew,
    TrackerPlan(u32),
    TrackerObserve(u32),
}

/// The exports of the operations, by index in OPERATIONS.
const OPERATION_EXPORTS: [&str; 8] = [
    "keyclaim_parse_claim",
    "keyclaim_plan_fanout",
    "keyclaim_select_keys",
    "keyclaim_complete_client",
    "keyclaim_complete_federation",
    "keyclaim_classify_claim",
    "keyclaim_tracker_run",
    "keyclaim_complete_upstream",
];

impl Export {
    fn name(self) -> &'static str {
        match self {
            Export::Op(i) => OPERATION_EXPORTS[i],
            Export::TrackerNew => "keyclaim_tracker_new",
            Export::TrackerPlan(_) => "keyclaim_tracker_plan",
            Export::TrackerObserve(_) => "keyclaim_tracker_observe",
        }
    }
}

impl Instance {
    /// Instantiates the module, calls `_initialize` and checks the ABI version and the exports.
    pub(crate) fn new(pre: &InstancePre<Host>, max_memory: usize) -> Result<Instance, Error> {
        let console = MemoryOutputPipe::new(CONSOLE_CAPACITY);
        // Real clocks and a cryptographic random source are wasmtime-wasi's defaults; no
        // arguments, no environment, no preopened directories.
        let wasi = WasiCtxBuilder::new().stdout(console.clone()).stderr(console.clone()).build_p1();
        let limits = StoreLimitsBuilder::new().memory_size(max_memory).trap_on_grow_failure(true).build();
        let mut store = Store::new(pre.module().engine(), Host { wasi, limits });
        store.limiter(|h| &mut h.limits);
        let instance = pre.instantiate(&mut store).map_err(|e| Error::Instantiate(format!("{e:?}")))?;

        let init = instance
            .get_typed_func::<(), ()>(&mut store, "_initialize")
            .map_err(|e| missing("_initialize", e))?;
        if let Err(e) = init.call(&mut store, ()) {
            return Err(trap("_initialize", &e, &console));
        }
        let version = instance
            .get_typed_func::<(), i32>(&mut store, "keyclaim_abi_version")
            .map_err(|e| missing("keyclaim_abi_version", e))?;
        let found = version.call(&mut store, ()).map_err(|e| trap("keyclaim_abi_version", &e, &console))?;
        if found != ABI_VERSION {
            return Err(Error::AbiVersion { found, expected: ABI_VERSION });
        }

        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| Error::Abi("the module does not export its memory".into()))?;
        macro_rules! func {
            ($name:expr) => {{
                let name: &str = $name;
                instance.get_typed_func(&mut store, name).map_err(|e| missing(name, e))?
            }};
        }
        let mut ops = Vec::with_capacity(OPERATIONS.len());
        for (export, op) in OPERATION_EXPORTS.iter().zip(OPERATIONS) {
            debug_assert_eq!(export.strip_prefix("keyclaim_"), Some(op));
            ops.push(func!(export));
        }
        Ok(Instance {
            alloc: func!("keyclaim_alloc"),
            free: func!("keyclaim_free"),
            tracker_new: func!("keyclaim_tracker_new"),
            tracker_plan: func!("keyclaim_tracker_plan"),
            tracker_observe: func!("keyclaim_tracker_observe"),
            tracker_free: func!("keyclaim_tracker_free"),
            ops,
            store,
            memory,
            console,
            in_ptr: 0,
            in_cap: 0,
            broken: false,
        })
    }

    /// The instance's linear memory size in bytes.
    pub(crate) fn memory_size(&self) -> usize {
        self.memory.data_size(&self.store)
    }

    /// Copies `input` into the instance, calls the export and returns a copy of the envelope it
    /// answers. Both buffers are freed (or the input buffer kept for the next call).
    pub(crate) fn call(&mut self, export: Export, input: &[u8]) -> Result<Vec<u8>, Error> {
        if self.broken {
            return Err(Error::Abi("the instance was discarded after a failure".into()));
        }
        if input.len() > MAX_INPUT_BYTES {
            return Err(Error::TooLarge { len: input.len() });
        }
        let mut ptr = 0u32; // ptr 0 with length 0 is the empty input: no buffer needed
        let mut own = false; // ptr is a buffer for this call alone
        if !input.is_empty() {
            if input.len() <= self.in_cap {
                ptr = self.in_ptr;
            } else {
                let keep = input.len() <= KEPT_INPUT_MAX;
                let mut size = input.len();
                if keep {
                    size = size.max(KEPT_INPUT_MIN);
                    let old = std::mem::take(&mut self.in_ptr);
                    self.in_cap = 0;
                    self.free_buffer(old)?; // the kept buffer is too small
                }
                let alloc = self.alloc.clone();
                // size <= MAX_INPUT_BYTES, so it fits in u32
                ptr = self.guard("keyclaim_alloc", |s| alloc.call(s, size as u32))?;
                if ptr == 0 {
                    return Err(Error::TooLarge { len: input.len() });
                }
                if keep {
                    (self.in_ptr, self.in_cap) = (ptr, size);
                } else {
                    own = true;
                }
            }
            let start = ptr as usize;
            let mem = self.memory.data_mut(&mut self.store);
            match mem.get_mut(start..start + input.len()) {
                Some(dst) => dst.copy_from_slice(input),
                None => {
                    self.broken = true;
                    return Err(Error::Abi(format!("keyclaim_alloc returned {ptr}, outside memory")));
                }
            }
        }
        let len = input.len() as u32;
        let r: u64 = match export {
            Export::Op(i) => {
                let f = self.ops[i].clone();
                self.guard(export.name(), |s| f.call(s, (ptr, len)))?
            }
            Export::TrackerNew => {
                let f = self.tracker_new.clone();
                self.guard(export.name(), |s| f.call(s, (ptr, len)))?
            }
            Export::TrackerPlan(h) | Export::TrackerObserve(h) => {
                let f = match export {
                    Export::TrackerPlan(_) => self.tracker_plan.clone(),
                    _ => self.tracker_observe.clone(),
                };
                self.guard(export.name(), |s| f.call(s, (h, ptr, len)))?
            }
        };
        // The result is an i64 read as unsigned: out_ptr in the high 32 bits, out_len in the low.
        let (out_ptr, out_len) = ((r >> 32) as u32, r as u32);
        // Read through the memory as it is now: the call may have grown it.
        let (start, end) = (out_ptr as usize, out_ptr as usize + out_len as usize);
        let out = match self.memory.data(&self.store).get(start..end) {
            Some(view) => view.to_vec(), // a copy: the next call reuses guest memory
            None => {
                self.broken = true;
                return Err(Error::Abi(format!(
                    "{} answered {out_len} bytes at {out_ptr}, outside memory",
                    export.name()
                )));
            }
        };
        self.free_buffer(out_ptr)?;
        if own {
            self.free_buffer(ptr)?;
        }
        Ok(out)
    }

    /// Forgets a tracker: true if the handle was live.
    pub(crate) fn tracker_free(&mut self, handle: u32) -> Result<bool, Error> {
        let f = self.tracker_free.clone();
        Ok(self.guard("keyclaim_tracker_free", |s| f.call(s, handle))? == 0)
    }

    fn free_buffer(&mut self, ptr: u32) -> Result<(), Error> {
        if ptr == 0 {
            return Ok(());
        }
        let f = self.free.clone();
        self.guard("keyclaim_free", |s| f.call(s, ptr))
    }

    /// Runs one call into the module; a failure (a trap, the runtime exiting) breaks the instance.
    fn guard<R>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Store<Host>) -> wasmtime::Result<R>,
    ) -> Result<R, Error> {
        f(&mut self.store).map_err(|e| {
            self.broken = true;
            trap(what, &e, &self.console)
        })
    }
}

fn missing(name: &str, e: wasmtime::Error) -> Error {
    Error::Abi(format!("the module does not export {name} as the ABI says: {e}"))
}

fn trap(what: &str, e: &wasmtime::Error, console: &MemoryOutputPipe) -> Error {
    let out = console.contents();
    let mut message = format!("{e:?}");
    if !out.is_empty() {
        message.push_str("\nthe module wrote: ");
        message.push_str(String::from_utf8_lossy(&out).trim_end());
    }
    Error::Trap { export: what.to_string(), message }
}
