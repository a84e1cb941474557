use std::sync::Arc;

use crate::instance::{Export, Instance};
use crate::types::{NewTracker, Observation, ObserveInput, Plan, PlanInput};
use crate::{decode, Error, Shared};

/// A client-side retry tracker (ABI section 9): remembers devices without keys and failed
/// servers and backs them off. Its state lives in one instance of the module, which it holds
/// (outside the pool) until it is dropped; dropping it frees the tracker. `Send`, one call at a
/// time (`&mut self`).
pub struct Tracker {
    shared: Arc<Shared>,
    instance: Option<Instance>,
    handle: u32,
}

impl Tracker {
    pub(crate) fn new(shared: Arc<Shared>, config: &[u8]) -> Result<Tracker, Error> {
        let mut instance = shared.pin()?;
        let result = instance.call(Export::TrackerNew, config).and_then(|env| decode::<NewTracker>(&env));
        match result {
            Ok(NewTracker { handle }) => Ok(Tracker { shared, instance: Some(instance), handle }),
            Err(e) => {
                shared.release(instance, false);
                Err(e)
            }
        }
    }

    /// The tracker's handle in its instance.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// The devices backed off at `now_ms`, and the request to send for the others.
    pub fn plan(&mut self, input: &PlanInput) -> Result<Plan, Error> {
        let env = self.plan_raw(&serde_json::to_vec(input)?)?;
        decode(&env)
    }

    /// Records a claim answer; what it means for each device.
    pub fn observe(&mut self, input: &ObserveInput) -> Result<Observation, Error> {
        let env = self.observe_raw(&serde_json::to_vec(input)?)?;
        decode(&env)
    }

    /// The plan step on the JSON text of its input; the module's envelope unchanged.
    pub fn plan_raw(&mut self, input: &[u8]) -> Result<Vec<u8>, Error> {
        self.call(Export::TrackerPlan(self.handle), input)
    }

    /// The observe step on the JSON text of its input; the module's envelope unchanged.
    pub fn observe_raw(&mut self, input: &[u8]) -> Result<Vec<u8>, Error> {
        self.call(Export::TrackerObserve(self.handle), input)
    }

    fn call(&mut self, export: Export, input: &[u8]) -> Result<Vec<u8>, Error> {
        let instance = self.instance.as_mut().ok_or(Error::TrackerLost)?;
        let result = instance.call(export, input);
        if instance.broken {
            // a trap: the tracker's state is gone with the instance
            if let Some(instance) = self.instance.take() {
                self.shared.release(instance, false);
            }
        }
        result
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if let Some(mut instance) = self.instance.take() {
            if !instance.broken {
                // A false answer (not a live handle) cannot happen; a trap marks it broken.
                let _ = instance.tracker_free(self.handle);
            }
            self.shared.release(instance, false);
        }
    }
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("handle", &self.handle)
            .field("lost", &self.instance.is_none())
            .finish()
    }
}
