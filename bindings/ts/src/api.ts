// What both entry points export besides load().
export {
  ABI_VERSION,
  OPERATIONS,
  DEFAULT_MAX_MEMORY_MIB,
  DEFAULT_RECYCLE_MEMORY_MIB,
  Engine,
  KeyclaimError,
  KeyclaimTrap,
  Tracker,
  TrackerLostError,
  unwrap,
} from './engine.js';
export type { CompiledModule, EngineStats, LoadOptions } from './engine.js';
export type * from './types.js';
export { capMemory, capMemoryStream } from './memcap.js';
