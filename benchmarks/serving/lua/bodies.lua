-- wrk script for `mlflow models serve`: POSTs request bodies read from a file (one JSON body
-- per line, e.g. {"dataframe_split": {...}}), cycling through them.
--
--   wrk -t1 -c8 -d10s --latency -s bodies.lua http://127.0.0.1:P/invocations -- BODIES_FILE

local headers = { ["Content-Type"] = "application/json" }
local bodies = {}
local i = 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      bodies[#bodies + 1] = line
    end
  end
  assert(#bodies > 0, "no request bodies in " .. tostring(args[1]))
end

function request()
  i = i % #bodies + 1
  return wrk.format("POST", nil, headers, bodies[i])
end
