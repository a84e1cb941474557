#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod error;
mod instance;
mod tracker;
pub mod types;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::Serialize;
use wasmtime::{InstancePre, Linker, Module};

pub use error::Error;
pub use tracker::Tracker;
pub use types::*;

use error::Lossy;
use instance::{Export, Host, Instance};

/// The ABI version this crate implements (bindings/ABI.md section 12).
pub const ABI_VERSION: i32 = 1;

/// The largest input the module accepts, 64 MiB (ABI section 10).
pub const MAX_INPUT_BYTES: usize = 64 << 20;

/// The operations [`Engine::invoke`] accepts, in the order of ABI section 8.
pub const OPERATIONS: [&str; 8] = [
    "parse_claim",
    "plan_fanout",
    "select_keys",
    "complete_client",
    "complete_federation",
    "classify_claim",
    "tracker_run",
    "complete_upstream",
];

/// The module this crate was built with (`dist/keyclaim.wasm` of the keyclaim repository,
/// embedded at build time).
pub static MODULE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/keyclaim.wasm"));

/// How an [`Engine`] runs its instances.
#[derive(Clone, Debug)]
pub struct Config {
    /// The most instances in the pool, i.e. calls running at once (default: the number of CPUs).
    /// Trackers pin instances of their own on top of these.
    pub max_instances: usize,
    /// The memory cap of one instance: a call that needs more traps and the instance is discarded
    /// (default 256 MiB).
    pub max_memory_bytes: usize,
    /// An instance whose memory has grown past this after a call is dropped and replaced by a
    /// fresh one (default 64 MiB): WebAssembly memory never shrinks.
    pub recycle_memory_bytes: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_instances: std::thread::available_parallelism().map_or(4, |n| n.get()),
            max_memory_bytes: 256 << 20,
            recycle_memory_bytes: 64 << 20,
        }
    }
}

/// A snapshot of an engine's instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Instances in the pool (idle or serving a call).
    pub instances: usize,
    /// Idle instances.
    pub idle: usize,
    /// Instances created so far.
    pub created: u64,
    /// Instances discarded after a trap or recycled for their size.
    pub discarded: u64,
    /// The linear memory of the idle instances together, in bytes.
    pub idle_memory_bytes: usize,
}

/// The keyclaim module, compiled once, with a pool of instances. Cheap to clone (the clones share
/// the pool); `Send + Sync`: share one engine between all threads.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pre: InstancePre<Host>,
    config: Config,
    pool: Mutex<Pool>,
    freed: Condvar,
    created: AtomicU64,
    discarded: AtomicU64,
}

struct Pool {
    idle: Vec<Instance>,
    /// Instances holding a slot of the pool: the idle ones and those serving a call.
    slots: usize,
}

impl Engine {
    /// The engine of the module embedded in this crate, with the default [`Config`].
    pub fn new() -> Result<Engine, Error> {
        Engine::with_config(MODULE, Config::default())
    }

    /// The engine of another build of the module (a `keyclaim.wasm` of ABI version 1).
    pub fn from_bytes(module: &[u8]) -> Result<Engine, Error> {
        Engine::with_config(module, Config::default())
    }

    /// The engine of the module in the file at `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Engine, Error> {
        Engine::from_bytes(&std::fs::read(path)?)
    }

    /// The engine of `module` (e.g. [`MODULE`]) with `config`. Compiles the module (about a
    /// second on 2 cores; the embedded [`MODULE`] only once per process) and creates the first
    /// instance, which checks the module's ABI version.
    pub fn with_config(module: &[u8], config: Config) -> Result<Engine, Error> {
        // The embedded module is compiled once per process, whatever the number of engines.
        static EMBEDDED: Mutex<Option<InstancePre<Host>>> = Mutex::new(None);
        let pre = if std::ptr::eq(module, MODULE) {
            let mut cached = EMBEDDED.lock().unwrap_or_else(|e| e.into_inner());
            match &*cached {
                Some(pre) => pre.clone(),
                None => cached.insert(compile(module)?).clone(),
            }
        } else {
            compile(module)?
        };
        let config = Config { max_instances: config.max_instances.max(1), ..config };
        let shared = Arc::new(Shared {
            pre,
            config,
            pool: Mutex::new(Pool { idle: Vec::new(), slots: 0 }),
            freed: Condvar::new(),
            created: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
        });
        let first = shared.instantiate()?; // refuses a module of another ABI version
        shared.release(first, false);
        Ok(Engine { shared })
    }

    /// The engine's configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// A snapshot of the pool.
    pub fn stats(&self) -> Stats {
        let pool = self.shared.lock();
        Stats {
            instances: pool.slots,
            idle: pool.idle.len(),
            created: self.shared.created.load(Ordering::Relaxed),
            discarded: self.shared.discarded.load(Ordering::Relaxed),
            idle_memory_bytes: pool.idle.iter().map(Instance::memory_size).sum(),
        }
    }

    /// Runs operation `op` (one of [`OPERATIONS`]) on `input` (a JSON document) and returns the
    /// module's envelope unchanged: `{"result":...}` or `{"errcode":"...","error":"..."}`, byte
    /// for byte what the native engine answers. An `Err` means no envelope was obtained: an
    /// unknown operation, an input above 64 MiB, a trap.
    pub fn invoke(&self, op: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        let i =
            OPERATIONS.iter().position(|o| *o == op).ok_or_else(|| Error::UnknownOperation(op.to_owned()))?;
        self.call(Export::Op(i), input)
    }

    fn call(&self, export: Export, input: &[u8]) -> Result<Vec<u8>, Error> {
        if input.len() > MAX_INPUT_BYTES {
            return Err(Error::TooLarge { len: input.len() });
        }
        let mut lease = self.shared.acquire()?;
        lease.instance().call(export, input)
    }

    /// Encodes `input` into this thread's reused buffer and calls the operation.
    fn encode_call<I: Serialize + ?Sized>(&self, export: Export, input: &I) -> Result<Vec<u8>, Error> {
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with(|buf| {
            let mut buf = buf.try_borrow_mut().map_err(|_| Error::Abi("re-entered".into()))?;
            buf.clear();
            serde_json::to_writer(&mut *buf, input)?;
            let out = self.call(export, &buf);
            if buf.capacity() > KEPT_ENCODE_BUFFER {
                *buf = Vec::new(); // a large input's buffer is not kept
            }
            out
        })
    }

    fn typed<I: Serialize + ?Sized, O: DeserializeOwned>(&self, op: usize, input: &I) -> Result<O, Error> {
        decode(&self.encode_call(Export::Op(op), input)?)
    }

    /// Runs operation `op` on a typed input (any of this crate's input types, or anything that
    /// serialises to the operation's input) and returns the JSON text of its result, without
    /// decoding it: for a homeserver, the result of complete_client, complete_federation or
    /// complete_upstream is the HTTP body to send as it is. An error envelope is
    /// [`Error::Module`].
    pub fn result_json<I: Serialize + ?Sized>(&self, op: &str, input: &I) -> Result<Vec<u8>, Error> {
        let i =
            OPERATIONS.iter().position(|o| *o == op).ok_or_else(|| Error::UnknownOperation(op.to_owned()))?;
        let mut envelope = self.encode_call(Export::Op(i), input)?;
        let len = envelope_result(&envelope)?.len();
        envelope.truncate(RESULT_PREFIX.len() + len);
        envelope.drain(..RESULT_PREFIX.len());
        Ok(envelope)
    }

    /// parse_claim (ABI 8.1): validates a claim request body; the canonical request.
    pub fn parse_claim(&self, input: &ParseClaimInput) -> Result<ClaimRequest, Error> {
        self.typed(0, input)
    }

    /// plan_fanout (ABI 8.2): splits a request between this server and the remote ones.
    pub fn plan_fanout(&self, input: &PlanFanoutInput) -> Result<FanoutPlan, Error> {
        self.typed(1, input)
    }

    /// select_keys (ABI 8.3): claims from an in-memory key inventory.
    pub fn select_keys(&self, input: &SelectKeysInput) -> Result<Selection, Error> {
        self.typed(2, input)
    }

    /// complete_client (ABI 8.4): the complete answer to a client, from the local keys and the
    /// remote servers' answers.
    pub fn complete_client(&self, input: &CompleteClientInput) -> Result<ClaimResponse, Error> {
        self.typed(3, input)
    }

    /// complete_federation (ABI 8.5): the answer to another server.
    pub fn complete_federation(&self, input: &CompleteFederationInput) -> Result<FederationResponse, Error> {
        self.typed(4, input)
    }

    /// classify_claim (ABI 8.6): what a claim answer means for each requested device.
    pub fn classify_claim(&self, input: &ClassifyClaimInput) -> Result<Classification, Error> {
        self.typed(5, input)
    }

    /// tracker_run (ABI 8.7): a fresh tracker driven through steps in one call; one result per
    /// step.
    pub fn tracker_run(&self, input: &TrackerRunInput) -> Result<Vec<StepResult>, Error> {
        self.typed(6, input)
    }

    /// complete_upstream (ABI 8.8): completes an existing homeserver's answer (proxy mode).
    pub fn complete_upstream(&self, input: &CompleteUpstreamInput) -> Result<ClaimResponse, Error> {
        self.typed(7, input)
    }

    /// A retry tracker (ABI section 9) with `config`. It pins an instance of its own until it is
    /// dropped.
    pub fn tracker(&self, config: &TrackerConfig) -> Result<Tracker, Error> {
        self.tracker_raw(&serde_json::to_vec(config)?)
    }

    /// A retry tracker from the JSON text of its configuration (empty: the defaults).
    pub fn tracker_raw(&self, config: &[u8]) -> Result<Tracker, Error> {
        Tracker::new(self.shared.clone(), config)
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("config", &self.shared.config).field("stats", &self.stats()).finish()
    }
}

/// Compiles `module` and links it to WASI preview 1.
fn compile(module: &[u8]) -> Result<InstancePre<Host>, Error> {
    let failed = |e: wasmtime::Error| Error::Instantiate(format!("{e:?}"));
    let engine = wasmtime::Engine::new(&wasmtime::Config::new()).map_err(failed)?;
    let module = Module::new(&engine, module).map_err(failed)?;
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |h: &mut Host| &mut h.wasi).map_err(failed)?;
    linker.instantiate_pre(&module).map_err(failed)
}

/// The bytes of an envelope's `result`, or its error as [`Error::Module`].
pub fn envelope_result(envelope: &[u8]) -> Result<&[u8], Error> {
    const PREFIX: &[u8] = RESULT_PREFIX;
    if envelope.starts_with(PREFIX) && envelope.len() > PREFIX.len() && envelope.ends_with(b"}") {
        // canonical JSON with one member: the rest up to the final brace is the result
        return Ok(&envelope[PREFIX.len()..envelope.len() - 1]);
    }
    match serde_json::from_slice::<types::ErrorEnvelope>(envelope) {
        Ok(e) => Err(Error::Module { errcode: e.errcode, message: e.error }),
        Err(_) => Err(Error::Abi(format!("not an envelope: {}", Lossy(envelope)))),
    }
}

const RESULT_PREFIX: &[u8] = b"{\"result\":";

/// The largest input-encoding buffer a thread keeps between typed calls.
const KEPT_ENCODE_BUFFER: usize = 1 << 20;

pub(crate) fn decode<O: DeserializeOwned>(envelope: &[u8]) -> Result<O, Error> {
    let result = envelope_result(envelope)?;
    // Checking UTF-8 once up front is faster than serde_json checking every string and raw key.
    let text =
        std::str::from_utf8(result).map_err(|e| Error::Abi(format!("the answer is not UTF-8: {e}")))?;
    Ok(serde_json::from_str(text)?)
}

/// An instance lent out by the pool; it goes back (or is discarded) when the lease is dropped.
pub(crate) struct Lease<'a> {
    shared: &'a Shared,
    instance: Option<Instance>,
}

impl Lease<'_> {
    fn instance(&mut self) -> &mut Instance {
        self.instance.as_mut().expect("a lease holds its instance until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(mut instance) = self.instance.take() {
            if std::thread::panicking() {
                instance.broken = true;
            }
            self.shared.release(instance, true);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pool> {
        // The pool's state stays consistent whatever panicked while it was held.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn instantiate(&self) -> Result<Instance, Error> {
        let instance = Instance::new(&self.pre, self.config.max_memory_bytes)?;
        self.created.fetch_add(1, Ordering::Relaxed);
        Ok(instance)
    }

    /// An idle instance, a new one if the pool has room, or the next one released.
    fn acquire(&self) -> Result<Lease<'_>, Error> {
        let mut pool = self.lock();
        loop {
            if let Some(instance) = pool.idle.pop() {
                return Ok(Lease { shared: self, instance: Some(instance) });
            }
            if pool.slots < self.config.max_instances {
                pool.slots += 1;
                drop(pool);
                return match self.instantiate() {
                    Ok(instance) => Ok(Lease { shared: self, instance: Some(instance) }),
                    Err(e) => {
                        self.lock().slots -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            pool = self.freed.wait(pool).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// An instance outside the pool, for a tracker: an idle one leaves the pool (which may then
    /// create another), or a new one is created. Never waits.
    pub(crate) fn pin(&self) -> Result<Instance, Error> {
        {
            let mut pool = self.lock();
            if let Some(instance) = pool.idle.pop() {
                pool.slots -= 1;
                drop(pool);
                self.freed.notify_one();
                return Ok(instance);
            }
        }
        self.instantiate()
    }

    /// Returns an instance to the pool, or discards it if it failed or grew past the bound. An
    /// instance from outside the pool (`pooled` false) joins it if there is room.
    pub(crate) fn release(&self, instance: Instance, pooled: bool) {
        let discard = instance.broken || instance.memory_size() > self.config.recycle_memory_bytes;
        let mut pool = self.lock();
        if discard {
            self.discarded.fetch_add(1, Ordering::Relaxed);
            if pooled {
                pool.slots -= 1;
            }
        } else if pooled {
            pool.idle.push(instance);
        } else if pool.slots < self.config.max_instances {
            pool.slots += 1;
            pool.idle.push(instance);
        } else {
            return; // the pool is full: the instance is dropped
        }
        drop(pool);
        self.freed.notify_one();
    }
}
