// The client's retry tracker (BRIEF 7, ABI.md 8.7) stepped through time. The first claim is the
// scenario's, at 0 ms; each later claim asks the tracker for a plan and claims only the devices
// it names, from the inventory as the earlier claims left it. The tracker is run statelessly
// (tracker_run) from the whole list of steps, so the page's state is just the list of times.
import type { Engine, MatrixError } from "./engine";
import { claimOnce, type Claim, type Outcome } from "./run";
import type { Scenario } from "./scenario";

type RequestMap = Record<string, Record<string, string>>;

export interface PlanResult {
  deferred: Record<string, Record<string, number>>;
  one_time_keys: RequestMap;
}

export interface TrackerStep {
  at: number;
  /** The plan the tracker made at this time (absent for the first claim, which is the scenario's). */
  plan?: PlanResult;
  /** The claim made, when there was anything to claim, and how the tracker read its answer. */
  claimed?: { request: RequestMap; outcomes: Record<string, Record<string, Outcome>>; tracked: number };
}

export interface TrackerView {
  steps: TrackerStep[];
  /** The tracker's plan at `now`. */
  next?: PlanResult;
  error?: MatrixError;
}

const q = JSON.stringify;

export function runTracker(engine: Engine, s: Scenario, first: Claim): TrackerView {
  const mode = s.tracker.mode;
  const steps: string[] = [];
  const view: TrackerView = { steps: [] };
  const run = () => engine.call("tracker_run", `{"config":{"server_name":${q(s.serverName)}},"steps":[${steps.join(",")}]}`);
  const observe = (at: number, requestText: string, answer: string) =>
    steps.push(`{"op":"observe","input":{"now_ms":${at},"request":${requestText},"body":${q(answer)}}}`);
  const plan = (at: number, requestText: string) => steps.push(`{"op":"plan","input":{"now_ms":${at},"request":${requestText}}}`);
  const timeout = (JSON.parse(first.requestText) as { timeout?: number }).timeout;
  // The devices the client still needs a key for: a claimed device has its session and is not
  // claimed again.
  const needed: RequestMap = structuredClone(first.request);
  const forget = (outcomes: Record<string, Record<string, Outcome>>) => {
    for (const [user, devs] of Object.entries(outcomes)) {
      for (const [dev, o] of Object.entries(devs)) if (o.outcome === "claimed" && needed[user]) delete needed[user][dev];
    }
  };
  const neededText = () => q({ one_time_keys: needed });

  plan(0, first.requestText);
  observe(0, first.requestText, first.answers[mode].text);
  let inventory = first.inventoryAfter;
  let results = run();
  if (!results.ok) return { steps: [], error: results.error };
  const observed = (results.value as unknown[])[1] as { outcomes: Record<string, Record<string, Outcome>>; tracked: number };
  view.steps.push({ at: 0, claimed: { request: first.request, ...observed } });
  forget(observed.outcomes);

  for (const at of [...s.tracker.claims].sort((a, b) => a - b)) {
    plan(at, neededText());
    results = run();
    if (!results.ok) return { ...view, error: results.error };
    const p = (results.value as unknown[]).at(-1) as PlanResult;
    const step: TrackerStep = { at, plan: p };
    view.steps.push(step);
    if (Object.keys(p.one_time_keys).length === 0) continue;
    const subText = q({ one_time_keys: p.one_time_keys, timeout });
    const c = claimOnce(engine, s, subText, inventory);
    if ("field" in c) return { ...view, error: c.error };
    inventory = c.inventoryAfter;
    observe(at, subText, c.answers[mode].text);
    results = run();
    if (!results.ok) return { ...view, error: results.error };
    const o = (results.value as unknown[]).at(-1) as { outcomes: Record<string, Record<string, Outcome>>; tracked: number };
    step.claimed = { request: p.one_time_keys, ...o };
    forget(o.outcomes);
  }
  plan(s.tracker.now, neededText());
  results = run();
  if (!results.ok) return { ...view, error: results.error };
  view.next = (results.value as unknown[]).at(-1) as PlanResult;
  return view;
}
