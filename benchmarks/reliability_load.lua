-- wrk script of the reliability load (benchmarks/reliability_load.py): the serving benchmark's
-- transactions.lua (unique ids, increasing datetimes), plus a drain at the end.
--
--   wrk -t1 -c64 -d64s --timeout=10s --latency -s reliability_load.lua URL/predict -- \
--       SEQ_BASE STEP T0 0 THREADS CUSTOMERS TERMINALS LOAD_SECONDS
--
-- For LOAD_SECONDS every connection sends transactions back to back; after that, delay()
-- holds each connection (no new request) until wrk stops. wrk drops the requests in flight when
-- its duration ends, which the server still scores and logs: without the drain, the log would
-- hold up to one row per connection that wrk never counted. With it, every request wrk sent has
-- been answered (and counted) before it stops, so logged rows == wrk's 2xx count exactly.
-- Keep the drain shorter than --timeout: wrk counts a connection idle longer than that as a
-- timeout.

local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "serving/lua/transactions.lua")

local transactions_init = init
local load_until = 0

function init(args)
  transactions_init(args)
  load_until = os.time() + (tonumber(args[8]) or 60)
end

function delay()
  if os.time() >= load_until then
    return 3600000 -- ms: longer than any run, i.e. no further request on this connection
  end
  return 0
end
