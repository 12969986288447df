-- wrk script: POST pre-signed agent submissions, count answers by status.
--
--   wrk -t1 -c32 -d10s -s bench/submit.lua http://127.0.0.1:PORT -- requests.tsv [path]
--
-- requests.tsv has one request a line: agent<TAB>timestamp<TAB>signature<TAB>json body.
-- The bodies are signed by load_bench.py just before the run (the server accepts
-- timestamps within 300 s), so no HMAC is computed here. "created" counts 201 answers (a new
-- request); a body sent again within a run is a replay of the signed request (200).

local reqs = {}
local n = 0
local i = 0
ok = 0
created = 0
bad = 0
statuses = ""
local by_status = {}

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   local file = args[1]
   local path = args[2] or "/v1/actions"
   for line in io.lines(file) do
      local agent, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      if agent then
         n = n + 1
         reqs[n] = wrk.format("POST", path, {
            ["Content-Type"] = "application/json",
            ["X-Signoff-Agent"] = agent,
            ["X-Signoff-Timestamp"] = ts,
            ["X-Signoff-Signature"] = sig,
         }, body)
      end
   end
   if n == 0 then
      error("no requests in " .. file)
   end
   i = math.random(n) - 1
end

function request()
   i = i % n + 1
   return reqs[i]
end

function response(status, headers, body)
   if status >= 200 and status < 300 then
      ok = ok + 1
      if status == 201 then
         created = created + 1
      end
   else
      bad = bad + 1
      by_status[status] = (by_status[status] or 0) + 1
      local parts = {}
      for k, v in pairs(by_status) do
         table.insert(parts, k .. ":" .. v)
      end
      statuses = table.concat(parts, ",")
   end
end

function done(summary, latency, requests)
   local total_ok, total_created, total_bad, codes = 0, 0, 0, {}
   for _, t in ipairs(threads) do
      total_ok = total_ok + t:get("ok")
      total_created = total_created + t:get("created")
      total_bad = total_bad + t:get("bad")
      local s = t:get("statuses")
      if s and s ~= "" then
         table.insert(codes, s)
      end
   end
   local e = summary.errors
   io.write(string.format(
      'WRK_RESULT {"duration_us": %d, "requests": %d, "ok": %d, "created": %d, "not_ok": %d, "statuses": "%s", ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"latency_us": {"mean": %.1f, "p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d}}\n',
      summary.duration, summary.requests, total_ok, total_created, total_bad, table.concat(codes, ","),
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max))
end
