-- wrk script for benchmarks/orders.py: GET /v1/members/{id}/balance over random members.
--
--   wrk -t T -c C -d D --latency -s benchmarks/balance.lua BASE_URL -- MEMBERS_FILE
--
-- BASE_URL ends before /v1 (e.g. http://127.0.0.1:8765). done() prints the same "bench:"
-- lines as orders.lua; "created" counts the 200s.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  members = {}
  for line in io.lines(args[1]) do
    if #line > 0 then
      members[#members + 1] = line
    end
  end
  assert(#members > 0, "no members in " .. args[1])
  math.randomseed(os.time() * 100 + #members)
  n, created, replayed, other = 0, 0, 0, 0
end

function request()
  n = n + 1
  return wrk.format("GET", "/v1/members/" .. members[math.random(#members)] .. "/balance")
end

function response(status, headers, body)
  if status == 200 then
    created = created + 1
  else
    other = other + 1
    if other <= 3 then
      io.stderr:write("non-200 " .. status .. ": " .. string.sub(body, 1, 300) .. "\n")
    end
  end
end

function done(summary, latency, requests)
  local c, o, sent = 0, 0, 0
  for _, thread in ipairs(threads) do
    c = c + (thread:get("created") or 0)
    o = o + (thread:get("other") or 0)
    sent = sent + (thread:get("n") or 0)
  end
  local e = summary.errors
  io.write(string.format("bench:duration_us %d\n", summary.duration))
  io.write(string.format("bench:requests %d\n", summary.requests))
  io.write(string.format("bench:sent %d\n", sent))
  io.write(string.format("bench:created %d\n", c))
  io.write(string.format("bench:replayed %d\n", 0))
  io.write(string.format("bench:other_status %d\n", o))
  io.write(string.format("bench:errors_connect %d\n", e.connect))
  io.write(string.format("bench:errors_read %d\n", e.read))
  io.write(string.format("bench:errors_write %d\n", e.write))
  io.write(string.format("bench:errors_status %d\n", e.status))
  io.write(string.format("bench:errors_timeout %d\n", e.timeout))
  for _, p in ipairs({50, 90, 99, 99.9}) do
    io.write(string.format("bench:latency_p%s_us %d\n", tostring(p), latency:percentile(p)))
  end
  io.write(string.format("bench:latency_mean_us %.1f\n", latency.mean))
  io.write(string.format("bench:latency_max_us %d\n", latency.max))
end
