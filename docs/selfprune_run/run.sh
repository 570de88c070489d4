#!/bin/bash
cd /work/main
date -Is > /tmp/sp/t_start
OMP_NUM_THREADS=1 .venv/bin/prunedsl serve-llm --model smollm2-135m --port 56797 > /tmp/sp/server.log 2>&1 &
echo $! > /tmp/sp/server.pid
for i in $(seq 1 300); do curl -sf http://127.0.0.1:56797/v1/models >/dev/null && break; sleep 1; done
date -Is > /tmp/sp/t_server_ready
/usr/bin/time -v .venv/bin/prunedsl search --model smollm2-135m --sparsity 0.6 --proposer llm --llm-base-url http://127.0.0.1:56797/v1 --llm-model smollm2-135m --budget 12 --full-evals 2 --test-windows 8 --report-top 1 --threads 1 --output /tmp/selfprune > /tmp/sp/search.log 2>&1
echo $? > /tmp/sp/search.rc
date -Is > /tmp/sp/t_search_end
kill -TERM $(cat /tmp/sp/server.pid); wait $(cat /tmp/sp/server.pid); echo $? > /tmp/sp/server.rc
date -Is > /tmp/sp/t_end
