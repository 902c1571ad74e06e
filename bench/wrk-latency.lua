-- wrk script: prints the latency percentiles wrk's --latency leaves out (p99.9), in microseconds, for bench/http.js.
done = function(summary, latency, requests)
  for _, p in ipairs({ 50, 99, 99.9 }) do
    io.write(string.format("PERCENTILE %g %d\n", p, latency:percentile(p)))
  end
end
