// Statistics shared by the benchmarks.
'use strict';

/** Percentile of an ascending array, interpolating linearly between closest ranks (p in [0, 100]). */
function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const rank = (p / 100) * (sorted.length - 1);
  const low = Math.floor(rank);
  const high = Math.ceil(rank);
  return sorted[low] + (sorted[high] - sorted[low]) * (rank - low);
}

module.exports = { percentile };
