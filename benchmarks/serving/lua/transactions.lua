-- wrk script for this service: POSTs raw transactions to /predict (or /predict/batch).
--
--   wrk -t1 -c8 -d10s --latency -s transactions.lua http://127.0.0.1:P/predict -- \
--       SEQ_BASE STEP T0 [BATCH [THREADS [CUSTOMERS [TERMINALS]]]]
--
-- Every transaction gets a sequence number seq >= SEQ_BASE, unique across wrk threads:
--   TRANSACTION_ID = 1e9 + seq      (the API answers 409 to an id it has already scored)
--   TX_DATETIME    = T0 + floor(seq * STEP) seconds, UTC (increasing, as the stream is)
-- so runs given disjoint SEQ_BASE ranges never repeat an id and never go back in time.
-- Customers, terminals and amounts are random: 0..CUSTOMERS-1, 0..TERMINALS-1, 5..300.
-- BATCH = 0: one transaction per request (/predict); BATCH = n: {"transactions": [n of them]}.
-- LuaJIT / Lua 5.1: no integer division operator, hence math.floor.

local ID_ORIGIN = 1000000000
local headers = { ["Content-Type"] = "application/json" }

local seq_base, step, t0 = 0, 0.1, 0
local batch, nthreads, customers, terminals = 0, 1, 5000, 10000
local n = 0 -- requests built by this thread

-- Runs in wrk's main Lua state, once per thread, before init: number the threads.
local thread_count = 0
function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
end

function init(args)
  seq_base = tonumber(args[1]) or 0
  step = tonumber(args[2]) or 0.1
  t0 = tonumber(args[3]) or 0
  batch = tonumber(args[4]) or 0
  nthreads = tonumber(args[5]) or 1
  customers = tonumber(args[6]) or 5000
  terminals = tonumber(args[7]) or 10000
  math.randomseed(seq_base + 7919 * (tid or 0) + 1)
end

local function transaction(seq)
  return string.format(
    '{"TRANSACTION_ID":%d,"TX_DATETIME":"%s","CUSTOMER_ID":%d,"TERMINAL_ID":%d,"TX_AMOUNT":%.2f}',
    ID_ORIGIN + seq,
    os.date("!%Y-%m-%dT%H:%M:%S", t0 + math.floor(seq * step)),
    math.random(0, customers - 1),
    math.random(0, terminals - 1),
    5 + math.random() * 295
  )
end

function request()
  local k = n * nthreads + (tid or 0) -- this thread's k-th slot, interleaved with the others
  n = n + 1
  local body
  if batch > 0 then
    local first = seq_base + k * batch
    local parts = {}
    for i = 0, batch - 1 do
      parts[i + 1] = transaction(first + i)
    end
    body = '{"transactions":[' .. table.concat(parts, ",") .. "]}"
  else
    body = transaction(seq_base + k)
  end
  return wrk.format("POST", nil, headers, body)
end
