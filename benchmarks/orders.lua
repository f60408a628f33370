-- wrk script for benchmarks/orders.py: POST /v1/orders with unique orders over random members.
--
--   wrk -t T -c C -d D --latency -s benchmarks/orders.lua URL -- MEMBERS_FILE OUT_DIR RUN_TAG [CATEGORIES]
--
-- MEMBERS_FILE holds one member id a line. With CATEGORIES (comma-separated, repeats weigh
-- more), each order carries one item of a category picked at random, its price the order's
-- total, so that the programme's category multipliers and exclusions apply; without it an
-- order has no items. Each wrk thread gets its own number (setup), so
-- order ids "RUN_TAG-t<thread>-<n>" are unique across threads. Every 201 appends the order id
-- it created to OUT_DIR/created-RUN_TAG-<thread>.txt, so that the caller can check each one is
-- in the ledger. done() prints machine-readable "bench:" lines for the caller to parse.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  local members_file, out_dir, tag, category_list = args[1], args[2], args[3], args[4]
  categories = {}
  for category in string.gmatch(category_list or "", "[^,]+") do
    categories[#categories + 1] = category
  end
  members = {}
  for line in io.lines(members_file) do
    if #line > 0 then
      members[#members + 1] = line
    end
  end
  assert(#members > 0, "no members in " .. members_file)
  prefix = tag .. "-t" .. tid .. "-"
  math.randomseed(os.time() * 100 + tid)
  n = 0
  created, replayed, other = 0, 0, 0
  out = assert(io.open(out_dir .. "/created-" .. tag .. "-" .. tid .. ".txt", "w"))
  out:setvbuf("line")
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  n = n + 1
  local member, total = members[math.random(#members)], math.random(100, 50000)
  local body
  if #categories > 0 then
    local category = categories[math.random(#categories)]
    body = string.format(
      '{"order_id": "%s%d", "member_id": "%s", "total": %d, "currency": "USD", "items": '
        .. '[{"sku": "%s-%d", "category": "%s", "quantity": 1, "unit_price": %d}]}',
      prefix, n, member, total, string.upper(category), total % 97, category, total)
  else
    body = string.format(
      '{"order_id": "%s%d", "member_id": "%s", "total": %d, "currency": "USD"}',
      prefix, n, member, total)
  end
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status == 201 then
    created = created + 1
    local id = string.match(body, '"order_id"%s*:%s*"([^"]+)"')
    out:write((id or "?"), "\n")
  elseif status == 200 then
    replayed = replayed + 1
  else
    other = other + 1
    if other <= 3 then
      io.stderr:write("non-2xx " .. status .. ": " .. string.sub(body, 1, 300) .. "\n")
    end
  end
end

function done(summary, latency, requests)
  local c, r, o, sent = 0, 0, 0, 0
  for _, thread in ipairs(threads) do
    c = c + (thread:get("created") or 0)
    r = r + (thread:get("replayed") or 0)
    o = o + (thread:get("other") or 0)
    sent = sent + (thread:get("n") or 0)
  end
  local e = summary.errors
  io.write(string.format("bench:duration_us %d\n", summary.duration))
  io.write(string.format("bench:requests %d\n", summary.requests))
  io.write(string.format("bench:sent %d\n", sent))
  io.write(string.format("bench:created %d\n", c))
  io.write(string.format("bench:replayed %d\n", r))
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
