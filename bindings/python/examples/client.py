import keyclaim

engine = keyclaim.Engine()
request: keyclaim.ClaimRequest = {"one_time_keys": {"@carol:down.example": {"CAROLDEV": "signed_curve25519"}, "@dan:example.org": {"DANDEV": "signed_curve25519"}}}
answer = b'{"one_time_keys":{"@dan:example.org":{"DANDEV":{}}},"failures":{"down.example":{"status":504,"message":"timed out"}}}'
print(engine.classify_claim({"request": request, "body": answer})["outcomes"])
with engine.tracker({"server_name": "example.org"}) as tracker:  # retry memory, backoff
    tracker.observe({"now_ms": 0, "request": request, "body": answer})
    retry = tracker.plan({"now_ms": 1000, "request": request})
    print(retry["deferred"], retry["one_time_keys"])  # both backed off until 15 s
