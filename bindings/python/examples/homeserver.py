import keyclaim

engine = keyclaim.Engine()  # one per process, shared by all threads
request = engine.parse_claim({"body": b'{"one_time_keys":{"@alice:example.org":{"ALICEDEV":"signed_curve25519"},"@bob:remote.example":{"BOBDEV":"signed_curve25519"}}}'})
plan = engine.plan_fanout({"server_name": "example.org", "request": request})
# claim plan["local"] from your store; POST plan["remote"][server] to each server
local: keyclaim.ClaimedKeys = {"@alice:example.org": {"ALICEDEV": {"signed_curve25519:AAAAHg": "j3fR3HemM16M7CWhoI4Sk5ZsdmdfQHsKL1xuSft6MSw"}}}
remote: dict[str, keyclaim.RemoteOutcome] = {"remote.example": {"status": 200, "body": b'{"one_time_keys":{"@bob:remote.example":{"BOBDEV":{"signed_curve25519:AAAAAQ":{"key":"bobkey"}}}}}'}}
answer = engine.complete_client({"server_name": "example.org", "request": request, "local": local, "remote": remote})
print(answer)  # the body of your 200 answer to the client
