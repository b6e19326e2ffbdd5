#!/usr/bin/env bash
# Mutation testing of the estimator and training-mechanics modules (not part of CI: minutes to an hour).
# What is mutated and which tests run: [tool.mutmut] in pyproject.toml. Needs mutmut (>= 3.8) installed beside
# pyro_lvm's test dependencies, e.g. `pip install -e '.[dev]' mutmut` in a virtual environment.
#   benchmarks/mutation.sh                          # every module listed in only_mutate
#   benchmarks/mutation.sh 'pyro_lvm.seeding*'      # one module (mutmut's name patterns)
# Prints the kill count per module; `mutmut show NAME` prints a surviving mutant's diff.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1  # one torch thread per process: the run uses one worker (--max-children 1)
rm -rf mutants
mutmut run --max-children "${MUTMUT_CHILDREN:-1}" "$@"
mutmut results --all true > mutants/results.txt
python - <<'PY'
import collections, re
counts = collections.defaultdict(collections.Counter)
for line in open("mutants/results.txt"):
    m = re.match(r"\s*([\w.]+)\.x\w*?__mutmut_\d+: (\w[\w ]*)", line)
    if m:
        counts[m.group(1)][m.group(2)] += 1
for module, c in sorted(counts.items()):
    total = sum(c.values())
    caught = c["killed"] + c["timeout"]  # a mutant that hangs (stopped by mutmut's time limit) is caught too
    print(f"{module}: {caught}/{total} caught ({c['timeout']} of them by the time limit), {dict(c)}")
PY
