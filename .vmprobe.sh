cd /work/main
P=.venv/bin/python
t() { s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); echo "$(echo "$e - $s" | bc) $*"; }
t $P -c "pass"
t $P -S -c "pass"
t $P -c "import openai"
t $P -c "import aiohttp"
t $P -c "import responses_bridge.serve"
t $P -c "import responses_bridge.cli"
t $P -m responses_bridge --help
t $P -c "import tests.support.oci_scenario"
t $P -c "import responses_bridge.sandbox.runner"
t $P -c "import responses_bridge.run.programs.worker"
