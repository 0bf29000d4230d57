"""Resilience under overload and faults, on a dedicated second application.

A module fixture deploys the application ``resilience`` (route prefix ``/resilience``) on the
session's Serve proxy: one small vLLM generator with tight limits (8 ongoing + 8 queued requests,
health checked every 2 s), a tiny classifier, the tokenizer and an ingress with a short request
deadline. Faults are injected into this application only; the main ``maas`` application used by
the other tests is never touched.

What is shown:

* deadline: a chat that cannot finish within ``ingress.request_timeout_s`` gets a 504 with the
  OpenAI error body, not before the deadline, and its engine work is aborted (the generator's
  running count goes back to 0 and fewer tokens were generated than asked for);
* overload: far more concurrent chats than the generator's ongoing + queued slots each get an
  answer that keeps the service's contract (:func:`contract_problems`): a complete 200, a refusal
  (503/429 with ``Retry-After`` and the OpenAI error body), or, for an admitted request that
  outlasts the deadline (how many do depends on the machine's speed), a 504 ``request_timeout``
  with the OpenAI error body; some are refused and some admitted; the same for streamed chats,
  which are refused (or time out) before the stream starts, never with an in-band error;
* a killed classifier replica mid-batch and a killed generator replica mid-load: only the requests
  in flight at the kill fail, each with a clean 503/504 and no hang; requests sent during the
  outage fail cleanly too; the service is whole again within a bound (the time is measured and
  printed); every request started after recovery succeeds; the killed generator leaves no vLLM
  process behind;
* a SIGKILLed vLLM engine process: ``/health`` fails, Serve replaces the replica, chats succeed again;
* ``x-request-id``: a client-sent id comes back unchanged; without one, every response has one.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import STARTUP_TIMEOUT_S, wait_healthy

pytestmark = pytest.mark.integration

APP = "resilience"
PREFIX = "/resilience"
GENERATOR = "resilience-smollm2"  # its own name: the metrics of this app's generator stay apart
CLASSIFIER = "resilience-tiny"
CHAT = "/v1/chat/completions"
MAX_ONGOING = 8
MAX_QUEUED = 8
DEADLINE_S = 8.0
"""``ingress.request_timeout_s`` of this app: an idle generator answers a short chat well within it,
LONG_CHAT cannot finish in it; under overload, admitted short chats may outlast it (504)."""
SHORT_MAX_TOKENS = 8
MAX_MODEL_LEN = 2048  # the generator's default context: room for a chat far longer than the deadline
LONG_MAX_TOKENS = MAX_MODEL_LEN - 64  # the prompt of LONG_CHAT is far below 64 tokens
"""Finishing LONG_CHAT within DEADLINE_S would take over 240 tokens/s from one stream, about 15 times
what SmolLM2-135M makes on 2 cores here (the deadline test prints the tokens made before the abort)."""
ABORT_BOUND_S = 30.0
"""Generous bound for the engine to drop a timed-out request (it is one step once cancelled)."""
OVERLOAD_CLIENTS = 48  # three times the generator's ongoing + queued slots
RECOVERY_BOUND_S = 300.0
"""Generous bound for a replacement replica to serve again (a first start is allowed 300-420 s)."""
DETECTION_BOUND_S = 60.0
"""Bound for ``/health`` to notice a dead engine (health checks every 2 s, 10 s timeouts)."""
POST_RECOVERY_REQUESTS = 12
CLIENT_TIMEOUT_S = DEADLINE_S + 60  # every request is answered by the deadline: this only catches hangs
ERROR_FIELDS = {"message", "type", "param", "code"}
REFUSED = {429, 503}
"""Refusals: sent at once, with ``Retry-After``."""
TIMED_OUT = 504
"""An admitted request whose response had not started by the deadline (code ``request_timeout``)."""
TEXTS = ["I love this phone", "the train is late again", "it is fine I guess", "worst service ever"]


# ----------------------------------------------------------------------------- the application


@pytest.fixture(scope="module")
def tiny_classifier(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 2-label head on MiniLM: real transformers work, no training needed."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("resilience") / CLASSIFIER
    model = AutoModelForSequenceClassification.from_pretrained(
        minilm_dir, num_labels=2, id2label={0: "no", 1: "yes"}, label2id={"no": 0, "yes": 1})
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(folder)
    return folder


def resilience_config(smollm2_dir: Path, classifier_dir: Path) -> dict[str, Any]:
    """Small replicas with tight limits and fast health checks, and a short request deadline."""
    health = {"health_check_period_s": 2, "health_check_timeout_s": 10}
    return {
        "generators": [{
            "name": GENERATOR, "path": str(smollm2_dir), "max_model_len": MAX_MODEL_LEN,
            "max_tokens_limit": MAX_MODEL_LEN, "kv_cache_gib": 1,
            "deployment": {"num_cpus": 0.2, "max_ongoing_requests": MAX_ONGOING,
                           "max_queued_requests": MAX_QUEUED, **health},
        }],
        "classifier": {"models": [{"name": CLASSIFIER, "path": str(classifier_dir), "max_seq_len": 32}],
                       "deployment": {"num_cpus": 0.1, **health}},
        "tokenizer": {"deployment": {"num_cpus": 0.05}},
        "ingress": {"request_timeout_s": DEADLINE_S, "deployment": {"num_cpus": 0.05}},
    }


@pytest.fixture(scope="module")
def resilience(service: str, smollm2_dir: Path, tiny_classifier: Path) -> Iterator[str]:
    """The ``resilience`` application on the session's proxy; yields its base URL."""
    from ray import serve

    from maas.config import AppConfig
    from pipelines.app import build_app

    config = AppConfig.model_validate(resilience_config(smollm2_dir, tiny_classifier))
    serve.run(build_app(config), name=APP, route_prefix=PREFIX, blocking=False)
    base = service + PREFIX
    try:
        wait_healthy(base, STARTUP_TIMEOUT_S)
        yield base
    finally:
        serve.delete(APP)


# ----------------------------------------------------------------------------- requests


@dataclass
class Outcome:
    """One request: when it started and ended (monotonic s), its status (0: no response) and body."""

    started: float
    ended: float
    status: int
    body: Any = None
    headers: dict[str, str] | None = None
    problem: str = ""


def short_chat(stream: bool = False) -> dict[str, Any]:
    """A chat that generates exactly SHORT_MAX_TOKENS tokens."""
    body: dict[str, Any] = {"model": GENERATOR, "messages": [{"role": "user", "content": "Say hi."}],
                            "max_tokens": SHORT_MAX_TOKENS, "temperature": 0, "ignore_eos": True}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


LONG_CHAT = {"model": GENERATOR, "messages": [{"role": "user", "content": "Write a long story."}],
             "max_tokens": LONG_MAX_TOKENS, "temperature": 0, "ignore_eos": True}


def classify_body(n: int, texts: int = 16) -> dict[str, Any]:
    return {"model": CLASSIFIER, "input": [f"{TEXTS[(n + i) % len(TEXTS)]} #{n}.{i}" for i in range(texts)]}


def post(http: httpx.Client, url: str, body: dict[str, Any], started: float | None = None,
         headers: dict[str, str] | None = None) -> Outcome:
    """POST ``body``; a transport error or client timeout is an outcome with status 0."""
    started = time.monotonic() if started is None else started
    try:
        response = http.post(url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        return Outcome(started, time.monotonic(), 0, problem=repr(exc))
    try:
        parsed = response.json()
    except ValueError:
        parsed = response.text
    return Outcome(started, time.monotonic(), response.status_code, parsed, dict(response.headers))


def post_stream(http: httpx.Client, url: str, body: dict[str, Any]) -> Outcome:
    """POST a streamed request; a 200's body is the list of its server-sent ``data:`` payloads."""
    started = time.monotonic()
    try:
        with http.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                response.read()
                return Outcome(started, time.monotonic(), response.status_code, response.json(),
                               dict(response.headers))
            events = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
            return Outcome(started, time.monotonic(), 200, events, dict(response.headers))
    except (httpx.HTTPError, ValueError) as exc:
        return Outcome(started, time.monotonic(), 0, problem=repr(exc))


def error_problems(outcome: Outcome) -> list[str]:
    """What a 4xx/5xx answer's body lacks: the OpenAI error body, a message without a traceback."""
    error = outcome.body.get("error") if isinstance(outcome.body, dict) else None
    if not isinstance(error, dict) or set(error) != ERROR_FIELDS:
        return ["no OpenAI error body"]
    if not error["message"] or "Traceback" in error["message"]:
        return ["no message, or a traceback in it"]
    if outcome.status == TIMED_OUT and error["code"] != "request_timeout":
        return [f"504 with code {error['code']!r}"]
    return []


def contract_problems(outcome: Outcome, complete: Callable[[Outcome], bool]) -> list[str]:
    """How one answer breaks the service's contract under overload or a fault ([] if it keeps it).

    Every request gets a response with an ``x-request-id``; a 200 is a complete answer
    (``complete``: no in-band error, nothing cut short); anything else is a refusal (503/429 with
    ``Retry-After``) or a deadline (504 ``request_timeout``), with the OpenAI error body.
    """
    if outcome.status == 0:
        return [f"no response ({outcome.problem.split('(')[0]})"]
    problems = [] if (outcome.headers or {}).get("x-request-id") else ["no x-request-id"]
    if outcome.status == 200:
        return problems + ([] if complete(outcome) else ["200 not a complete answer"])
    if outcome.status not in REFUSED | {TIMED_OUT}:
        return problems + [f"status {outcome.status}"]
    retry_after = (outcome.headers or {}).get("retry-after", "")
    if outcome.status in REFUSED and not (retry_after.isdigit() and int(retry_after) >= 1):
        problems.append("no Retry-After")
    return problems + error_problems(outcome)


def assert_contract(outcomes: list[Outcome], complete: Callable[[Outcome], bool], what: str) -> None:
    """Every answer keeps the contract (:func:`contract_problems`); the first break is shown."""
    broken = [(outcome, problems) for outcome in outcomes if (problems := contract_problems(outcome, complete))]
    if broken:
        counts = Counter(problem for _, problems in broken for problem in problems)
        raise AssertionError(f"{what}: {len(broken)} of {len(outcomes)} answers break the contract "
                             f"{dict(counts)}; e.g. {broken[0][0]}")


def is_complete_chat(outcome: Outcome) -> bool:
    """A 200 whose answer has all SHORT_MAX_TOKENS tokens (ignore_eos: it ends on the length)."""
    if outcome.status != 200 or not isinstance(outcome.body, dict):
        return False
    choice = outcome.body["choices"][0]
    return (choice["finish_reason"] == "length" and isinstance(choice["message"]["content"], str)
            and outcome.body["usage"]["completion_tokens"] == SHORT_MAX_TOKENS)


def is_complete_stream(outcome: Outcome) -> bool:
    """A 200 stream of chunks without an in-band error, ending in [DONE], with every token."""
    if outcome.status != 200 or not outcome.body or outcome.body[-1] != "[DONE]":
        return False
    chunks = [json.loads(event) for event in outcome.body[:-1]]
    if any("error" in chunk for chunk in chunks):
        return False
    return chunks[-1]["usage"]["completion_tokens"] == SHORT_MAX_TOKENS


def is_classification(outcome: Outcome, texts: int = 16) -> bool:
    return (outcome.status == 200 and isinstance(outcome.body, dict)
            and len(outcome.body["data"]) == texts)


def concurrently(count: int, call: Callable[[httpx.Client], Outcome]) -> list[Outcome]:
    """``count`` threads each making one call at the same moment (a barrier releases them)."""
    barrier = threading.Barrier(count)
    outcomes: list[Outcome | None] = [None] * count

    def run(index: int) -> None:
        with httpx.Client(timeout=CLIENT_TIMEOUT_S) as http:
            barrier.wait(timeout=60)
            outcomes[index] = call(http)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(CLIENT_TIMEOUT_S + 70)
    assert not any(thread.is_alive() for thread in threads), "a client hung"
    assert all(outcome is not None for outcome in outcomes), "a client died"
    return [outcome for outcome in outcomes if outcome is not None]


class Load:
    """``clients`` threads sending requests in a bounded loop, counting those in flight.

    ``body(n)`` makes the n-th request of a client. A request's start time is taken under the
    same lock as the in-flight count, so :meth:`mark` splits requests exactly into those that
    had started by then and those that had not.
    """

    def __init__(self, url: str, body: Callable[[int], dict[str, Any]], clients: int,
                 max_per_client: int) -> None:
        self.url = url
        self.body = body
        self.max_per_client = max_per_client
        self.outcomes: list[Outcome] = []
        self._in_flight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def _run(self) -> None:
        with httpx.Client(timeout=CLIENT_TIMEOUT_S) as http:
            for n in range(self.max_per_client):
                if self._stop.is_set():
                    return
                with self._lock:
                    self._in_flight += 1
                    started = time.monotonic()
                outcome = post(http, self.url, self.body(n), started)
                with self._lock:
                    self._in_flight -= 1
                    self.outcomes.append(outcome)

    def mark(self) -> tuple[float, int]:
        """(now, requests in flight now)."""
        with self._lock:
            return time.monotonic(), self._in_flight

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(CLIENT_TIMEOUT_S + 10)
        assert not any(thread.is_alive() for thread in self._threads), "a load client hung"
        return self.snapshot()


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, period_s: float = 0.5) -> float:
    """Poll ``condition`` until true; return the seconds it took, fail after ``timeout_s``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if condition():
            return time.monotonic() - start
        time.sleep(period_s)
    raise AssertionError(f"not within {timeout_s:.0f} s: {what}")


# ----------------------------------------------------------------------------- Serve and processes


def running_replicas(deployment: str) -> list[dict[str, Any]]:
    """RUNNING replicas of a deployment of this app, as the Serve controller reports them
    (the same details as the dashboard's ``GET /api/serve/applications/``: actor name, pid, ...)."""
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    deployments = details["applications"].get(APP, {}).get("deployments", {})
    replicas = deployments.get(deployment, {}).get("replicas", [])
    return [r for r in replicas if r["state"] == "RUNNING"]


def the_replica(deployment: str) -> dict[str, Any]:
    replicas = running_replicas(deployment)
    assert len(replicas) == 1 and replicas[0]["pid"], replicas
    return replicas[0]


def kill_replica(replica: dict[str, Any]) -> None:
    """Kill a replica's actor at once (no graceful shutdown), as a crash would."""
    import ray

    ray.kill(ray.get_actor(replica["actor_name"], namespace="serve"), no_restart=True)


def title(process: Any) -> str:
    """A process's title (vLLM names its processes ``VLLM::EngineCore``, ``VLLM::Worker``...)."""
    import psutil

    try:
        return " ".join(process.cmdline()) or process.name()
    except psutil.Error:
        return ""


def vllm_processes(replica_pid: int) -> list[Any]:
    """The vLLM processes under a replica process (engine core and its workers)."""
    import psutil

    return [p for p in psutil.Process(replica_pid).children(recursive=True) if "VLLM" in title(p)]


def still_running(processes: list[Any]) -> list[Any]:
    import psutil

    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def wait_gone(processes: list[Any], timeout_s: float) -> list[Any]:
    """Wait (bounded) for processes to end; return those still running."""
    deadline = time.monotonic() + timeout_s
    while still_running(processes) and time.monotonic() < deadline:
        time.sleep(0.5)
    return still_running(processes)


def generator_deployment() -> str:
    from pipelines.app import generator_deployment_name

    return generator_deployment_name(GENERATOR)


def generator_handle() -> Any:
    """The generator's deployment handle, usable from this synchronous test code.

    The tests run Serve's router on the caller's event loop (``RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0``,
    as ``maas serve`` does); this caller has no event loop, so its handle (cached by Serve) is
    initialized to use Serve's own router thread instead.
    """
    from ray import serve

    handle = serve.get_deployment_handle(generator_deployment(), app_name=APP)
    if not handle.is_initialized:
        handle._init(_run_router_in_separate_loop=True)
    return handle


def running_requests() -> int:
    return int(generator_handle().running_requests.remote().result(timeout_s=30))


def engine_idle() -> None:
    """Wait (bounded) until the generator runs no request: the admitted ones ended or were aborted."""
    wait_until(lambda: running_requests() == 0, ABORT_BOUND_S, "the generator's running requests back to 0")


def generator_tokens(base: str) -> tuple[float, float]:
    """(prompt, completion) tokens this app's generator has processed, from ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base}/metrics", timeout=30).text
    totals = {"maas_prompt_tokens": 0.0, "maas_completion_tokens": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name in totals:
            totals[family.name] = sum(s.value for s in family.samples
                                      if s.labels.get("model") == GENERATOR and s.name.endswith("_total"))
    return totals["maas_prompt_tokens"], totals["maas_completion_tokens"]


def healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=30).status_code == 200
    except httpx.HTTPError:
        return False


def whole_again(base: str, probe: Callable[[], bool]) -> bool:
    """``/health`` is 200 and a real request succeeds."""
    return healthy(base) and probe()


# ----------------------------------------------------------------------------- tests


def test_request_id_comes_back_and_is_always_set(resilience: str) -> None:
    sent = f"resilience-{uuid.uuid4().hex}"
    with httpx.Client(base_url=resilience, timeout=60) as http:
        tokenize = http.post("/v1/tokenize", json={"model": GENERATOR, "prompt": "hi"},
                             headers={"x-request-id": sent})
        assert tokenize.status_code == 200 and tokenize.headers["x-request-id"] == sent
        unsent = [http.get("/health"), http.post("/v1/tokenize", json={"model": GENERATOR, "prompt": "hi"}),
                  http.post("/v1/nothing", json={}), http.post("/v1/classify", json={"model": "nope", "input": "x"}),
                  http.post(CHAT, json={"model": GENERATOR, "messages": "hi"})]
        errored = http.post("/v1/nothing", json={}, headers={"x-request-id": sent + "-404"})
    assert [r.status_code for r in unsent] == [200, 200, 404, 404, 400]
    ids = [r.headers.get("x-request-id") for r in unsent]
    assert all(ids) and len(set(ids)) == len(ids), ids
    assert errored.status_code == 404 and errored.headers["x-request-id"] == sent + "-404"


def test_deadline_gives_504_and_aborts_the_engine_work(resilience: str) -> None:
    prompt_before, completion_before = generator_tokens(resilience)
    sent = f"deadline-{uuid.uuid4().hex}"
    with httpx.Client(timeout=CLIENT_TIMEOUT_S) as http:
        outcome = post(http, f"{resilience}{CHAT}", LONG_CHAT, headers={"x-request-id": sent})
    elapsed = outcome.ended - outcome.started
    print(f"\ndeadline: {outcome.status} after {elapsed:.1f} s (deadline {DEADLINE_S:g} s)")
    assert outcome.status != 200, (f"{LONG_MAX_TOKENS} tokens generated within {DEADLINE_S:g} s: "
                                   "this CPU is too fast for LONG_CHAT, raise MAX_MODEL_LEN")
    assert outcome.status == TIMED_OUT, f"expected 504 past the deadline, got {outcome}"
    assert contract_problems(outcome, is_complete_chat) == []
    assert (outcome.headers or {}).get("x-request-id") == sent
    assert elapsed >= DEADLINE_S - 0.1, "answered 504 before the deadline"

    # The proof of the abort is the token count below: a request left running ends too, later.
    engine_idle()
    # the generator records a request's tokens when it ends (metrics are sent asynchronously)
    wait_until(lambda: generator_tokens(resilience)[0] > prompt_before, 30,
               "the timed-out request reached the engine and ended there")
    generated = generator_tokens(resilience)[1] - completion_before
    print(f"deadline: {generated:.0f} of {LONG_MAX_TOKENS} tokens generated before the abort")
    assert generated < LONG_MAX_TOKENS, "the engine finished the timed-out request: it was not aborted"


def assert_overload_outcomes(outcomes: list[Outcome], complete: Callable[[Outcome], bool]) -> None:
    """Every answer keeps the contract; some requests were refused and some admitted.

    With three times more clients than slots, the generator must refuse some at once (503). An
    admitted request ends as a complete 200 or, if it has not started by the deadline, a 504:
    how many do depends on this machine's speed, so both count as admitted.
    """
    statuses = Counter(outcome.status for outcome in outcomes)
    print(f"\noverload: {dict(statuses)} for {len(outcomes)} concurrent requests "
          f"({MAX_ONGOING} ongoing + {MAX_QUEUED} queued slots, {DEADLINE_S:g} s deadline)")
    assert_contract(outcomes, complete, "overload")
    # A machine too busy to answer anything within the deadline (every request a 504, seen with
    # the cores saturated by other work) shows no refusal; any machine that answers does.
    assert statuses[503] >= 1 or statuses[200] == 0, f"nothing refused: {dict(statuses)}"
    assert statuses[200] + statuses[TIMED_OUT] >= 1, f"nothing admitted: {dict(statuses)}"


def test_overload_gets_complete_answers_refusals_or_timeouts(resilience: str) -> None:
    url = f"{resilience}{CHAT}"
    outcomes = concurrently(OVERLOAD_CLIENTS, lambda http: post(http, url, short_chat()))
    assert_overload_outcomes(outcomes, is_complete_chat)
    engine_idle()
    # and it serves normally right after; streamed, so that only its first token has to come
    # within the deadline: a whole chat on a slow, busy machine may legitimately outlast it
    with httpx.Client(timeout=CLIENT_TIMEOUT_S) as http:
        after = post_stream(http, url, short_chat(stream=True))
    assert is_complete_stream(after), after


def kill_under_load(base: str, load: Load, victim: dict[str, Any], probe: Callable[[], bool],
                    ok: Callable[[Outcome], bool], what: str) -> None:
    """Kill ``victim`` while ``load`` runs, wait until the service is whole again, check outcomes.

    Requests are split by when they started: before the kill (only those still in flight at the
    kill may fail), during the outage (each must fail cleanly or succeed) and after recovery (all
    must succeed).
    """
    load.start()
    try:
        wait_until(lambda: sum(ok(o) for o in load.snapshot()) >= 3 and load.mark()[1] >= 1, 180,
                   f"{what}: load running with requests in flight")
        killed_at, in_flight = load.mark()
        kill_replica(victim)
        remaining = wait_gone(_processes([victim["pid"]]), 60)
        assert not remaining, f"{what}: the killed replica's process is still running"
        recovery_s = wait_until(lambda: whole_again(base, probe), RECOVERY_BOUND_S,
                                f"{what}: whole again after the kill", period_s=1.0)
        recovered_at = time.monotonic()
        print(f"\n{what}: {in_flight} requests in flight at the kill; whole again after "
              f"{recovered_at - killed_at:.1f} s (polled {recovery_s:.1f} s after the process ended)")
        wait_until(lambda: sum(o.started >= recovered_at for o in load.snapshot()) >= POST_RECOVERY_REQUESTS,
                   180, f"{what}: requests after recovery")
    finally:
        outcomes = load.stop()
    assert_fault_outcomes(outcomes, killed_at, in_flight, recovered_at, ok, what)


def _processes(pids: list[int]) -> list[Any]:
    import psutil

    processes = []
    for pid in pids:
        try:
            processes.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    return processes


def assert_fault_outcomes(outcomes: list[Outcome], killed_at: float, in_flight: int,
                          recovered_at: float, ok: Callable[[Outcome], bool], what: str) -> None:
    """Every answer keeps the contract; only those in flight at the kill or sent during the outage
    failed; all after recovery succeeded."""
    before = [o for o in outcomes if o.started < killed_at]
    outage = [o for o in outcomes if killed_at <= o.started < recovered_at]
    after = [o for o in outcomes if o.started >= recovered_at]
    failed_before = [o for o in before if not ok(o)]
    print(f"{what}: before the kill {len(before)} requests ({len(failed_before)} failed, "
          f"{in_flight} were in flight); during the outage {len(outage)} "
          f"({dict(Counter(o.status for o in outage))}); after recovery {len(after)}")
    assert_contract(outcomes, ok, what)
    assert all(ok(o) for o in before if o.ended < killed_at), f"{what}: a failure before the kill"
    assert len(failed_before) <= in_flight, f"{what}: more failures than requests in flight"
    assert len(after) >= POST_RECOVERY_REQUESTS
    assert all(ok(o) for o in after), [o for o in after if not ok(o)][:3]


def test_classifier_replica_killed_mid_batch(resilience: str) -> None:
    url = f"{resilience}/v1/classify"
    victim = the_replica("classifier")
    load = Load(url, classify_body, clients=4, max_per_client=2000)

    def probe() -> bool:
        with httpx.Client(timeout=CLIENT_TIMEOUT_S) as http:
            return is_classification(post(http, url, classify_body(0, texts=1)), texts=1)

    kill_under_load(resilience, load, victim, probe, is_classification, "classifier replica kill")
    assert the_replica("classifier")["replica_id"] != victim["replica_id"]


def assert_no_vllm_left(processes: list[Any], what: str) -> None:
    """The vLLM processes of a replaced replica end (bounded wait); any left are killed, then fail."""
    left = wait_gone(processes, 60)
    for process in left:  # started by this module's replica: never leave them running
        process.kill()
    assert not left, f"{what}: vLLM processes of the old replica kept running: {[title(p) for p in left]}"


@pytest.mark.long  # a replica kill under load is shown by the classifier's; the generator's replacement
# and its vLLM processes' end by test_engine_process_killed_replica_replaced
def test_generator_replica_killed_mid_load(resilience: str) -> None:
    url = f"{resilience}{CHAT}"
    victim = the_replica(generator_deployment())
    engine = vllm_processes(victim["pid"])
    assert any("EngineCore" in title(p) for p in engine), [title(p) for p in engine]
    load = Load(url, lambda n: short_chat(), clients=4, max_per_client=500)

    def probe() -> bool:
        with httpx.Client(timeout=CLIENT_TIMEOUT_S) as http:
            return is_complete_chat(post(http, url, short_chat()))

    try:
        kill_under_load(resilience, load, victim, probe, is_complete_chat, "generator replica kill")
        assert the_replica(generator_deployment())["replica_id"] != victim["replica_id"]
    finally:
        assert_no_vllm_left(engine, "generator replica kill")


def test_engine_process_killed_replica_replaced(resilience: str) -> None:
    url = f"{resilience}{CHAT}"
    wait_healthy(resilience, RECOVERY_BOUND_S)
    victim = the_replica(generator_deployment())
    engine = vllm_processes(victim["pid"])
    cores = [p for p in engine if "EngineCore" in title(p)]
    assert len(cores) == 1, [title(p) for p in engine]
    killed_at = time.monotonic()
    os.kill(cores[0].pid, signal.SIGKILL)

    detected_s = wait_until(lambda: not healthy(resilience), DETECTION_BOUND_S, "/health fails")
    with httpx.Client(timeout=CLIENT_TIMEOUT_S) as http:
        during = post(http, url, short_chat())
    print(f"\nengine kill: /health failed after {detected_s:.1f} s; a chat then got {during.status}")
    # served only if the replacement was already up; else a clean 503/504
    assert not contract_problems(during, is_complete_chat), during

    def replaced_and_serving() -> bool:
        replicas = running_replicas(generator_deployment())
        if not replicas or replicas[0]["replica_id"] == victim["replica_id"]:
            return False
        with httpx.Client(timeout=CLIENT_TIMEOUT_S) as http:
            return healthy(resilience) and is_complete_chat(post(http, url, short_chat()))

    try:
        wait_until(replaced_and_serving, RECOVERY_BOUND_S, "replica replaced and serving", period_s=1.0)
        print(f"engine kill: replica replaced and serving after {time.monotonic() - killed_at:.1f} s")
        assert not wait_gone(_processes([victim["pid"]]), 60), "the replaced replica kept running"
    finally:
        assert_no_vllm_left(engine, "engine kill")


def test_streamed_overload_refused_or_timed_out_before_the_stream_starts(resilience: str) -> None:
    url = f"{resilience}{CHAT}"
    wait_healthy(resilience, RECOVERY_BOUND_S)
    outcomes = concurrently(OVERLOAD_CLIENTS, lambda http: post_stream(http, url, short_chat(stream=True)))
    assert_overload_outcomes(outcomes, is_complete_stream)  # a 200 stream with an in-band error breaks it
