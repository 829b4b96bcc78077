"""The core that drives every call (airflow_provider_cex.calls), without sockets: random worlds answer its
actions, and whatever they answer, a start that may have been processed is never sent again, no call spends
more than its retry budget or waits past the caps, the key goes to the application origin only, and at most
five redirects are followed per attempt."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_cex.answers import UnreadableBody
from airflow_provider_cex.calls import (
    DISCARD,
    Answer,
    Broken,
    Discard,
    Driver,
    Head,
    Probe,
    Read,
    Send,
    Wait,
)
from airflow_provider_cex.endpoints import DOWNLOAD_EXPORT, EXPORT_PROGRESS, KEY_HEADER, START_EXPORT
from airflow_provider_cex.exceptions import (
    ContentExporterError,
    ContentExporterNotFoundError,
    ContentExporterStartUncertainError,
    ContentExporterTransientError,
)
from airflow_provider_cex.policy import MAX_REDIRECTS, Call, RetryableFailure, RetryPolicy
from airflow_provider_cex.settings import origin_of, settings_from_connection

KEY = "cexk_4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e"
APP = "https://cex.example.com"
SETTINGS = settings_from_connection("cex", APP, KEY, None, {})
POLICY = RetryPolicy(max_retries=4, backoff_base=1.0, backoff_max=30.0, retry_after_cap=60.0)
LOG = logging.getLogger("test_calls")

statuses = st.sampled_from(
    [200, 201, 206, 301, 302, 303, 307, 308, 400, 401, 403, 404, 409, 429, 500, 503, 504]
)
retry_afters = st.sampled_from([None, "0", "1", "30", "61", "3600", "soon"])
locations = st.sampled_from(
    [
        None,
        "/x",
        "../y",
        "//evil.example/p",
        "https://evil.example/p",
        "http://cex.example.com/p",
        "https://CEX.example.com/p",
        "https://cex.example.com.evil.example/p",
        "https://user@evil.example/p",
    ]
)
heads = st.builds(
    lambda status, location, retry_after: Head(
        status, {k: v for k, v in (("Location", location), ("Retry-After", retry_after)) if v is not None}
    ),
    statuses,
    locations,
    retry_afters,
)
brokens = st.builds(Broken, st.just("the connection broke"), surely_not_sent=st.booleans())
sent_outcomes = st.one_of(heads, heads, heads, brokens)  # mostly answers
bodies = st.one_of(st.just(b'{"hash": "abc"}'), brokens, st.just(UnreadableBody("too large")))


@dataclass
class Run:
    """What the core asked for, and how the call ended."""

    actions: list[Any] = field(default_factory=list)
    answers: list[Any] = field(default_factory=list)  # the outcome given to each Send
    result: Any = None
    error: BaseException | None = None

    @property
    def sends(self) -> list[Send]:
        return [a for a in self.actions if isinstance(a, Send)]

    @property
    def waits(self) -> list[float]:
        return [a.seconds for a in self.actions if isinstance(a, Wait)]


def drive(steps: Any, data: Any) -> Run:
    """Perform ``steps`` against a world drawn by hypothesis, action by action, as a transport would."""
    run, outcome = Run(), None
    for _ in range(500):  # the core is bounded by its budgets; this only stops a runaway test
        try:
            action = steps.send(outcome)
        except StopIteration as done:
            run.result = done.value
            return run
        except Exception as err:
            run.error = err
            return run
        run.actions.append(action)
        if isinstance(action, Send):
            outcome = data.draw(sent_outcomes)
            run.answers.append(outcome)
        elif isinstance(action, Read):
            outcome = data.draw(bodies) if action.strict else b"error"
        elif isinstance(action, Probe):
            outcome = data.draw(st.sampled_from([None, 401, 403, 404]))
        else:
            assert isinstance(action, (Wait, Discard))
            outcome = None
    raise AssertionError("the core did not end")


def driver() -> Driver:
    return Driver(SETTINGS, POLICY, log=LOG, rng=random.Random(7))


def steps_for(endpoint: str) -> Any:
    call = Call(endpoint, "1" if endpoint == START_EXPORT else "h")
    url = SETTINGS.url(endpoint, call.subject)
    if endpoint == DOWNLOAD_EXPORT:
        return driver().download(call, url)
    return driver().small(call, url, {"rootContentId": "1"} if endpoint == START_EXPORT else None)


def may_have_been_processed(outcome: Any) -> bool:
    """After this answer to a start POST, the export may exist: sending it again could start a second."""
    if isinstance(outcome, Broken):
        return not outcome.surely_not_sent
    return outcome.status not in (301, 302, 303, 307, 308, 429, 503)  # redirected or refused: not processed


endpoints = st.sampled_from([START_EXPORT, EXPORT_PROGRESS, DOWNLOAD_EXPORT])


@given(st.data())
@settings(max_examples=500, deadline=None)
def test_a_start_post_that_may_have_been_processed_is_never_sent_again(data):
    run = drive(steps_for(START_EXPORT), data)
    posts = [
        (send, answer) for send, answer in zip(run.sends, run.answers, strict=True) if send.method == "POST"
    ]
    for index, (_send, answer) in enumerate(posts):
        if may_have_been_processed(answer):
            assert index == len(posts) - 1, "a start that may have been processed was sent again"
    if run.error is not None and posts and may_have_been_processed(posts[-1][1]) and not run.result:
        assert not isinstance(run.error, (RetryableFailure, ContentExporterTransientError))


@given(endpoints, st.data())
@settings(max_examples=500, deadline=None)
def test_no_call_spends_more_than_its_budget_or_waits_past_the_caps(endpoint, data):
    run = drive(steps_for(endpoint), data)
    attempts = sum(send.first_hop for send in run.sends)
    assert attempts <= POLICY.max_retries + 1
    assert len(run.waits) <= POLICY.max_retries and len(run.waits) == attempts - 1
    assert all(0 <= wait <= max(POLICY.backoff_max, POLICY.retry_after_cap) for wait in run.waits)
    # A call ends in an answer or an error a user can act on; an internal retry signal never escapes.
    assert (run.error is None) != (run.result is None)
    if run.error is not None:
        assert isinstance(run.error, ContentExporterError)
    elif endpoint == DOWNLOAD_EXPORT:
        assert isinstance(run.result, Head) and run.result.status in (200, 201, 206)
    else:
        assert isinstance(run.result, Answer) and 200 <= run.result.head.status < 300


@given(endpoints, st.data())
@settings(max_examples=500, deadline=None)
def test_the_key_goes_to_the_application_origin_only_and_an_attempt_follows_at_most_five_redirects(
    endpoint, data
):
    run = drive(steps_for(endpoint), data)
    hops = 0
    for send in run.sends:
        hops = 1 if send.first_hop else hops + 1
        assert hops <= MAX_REDIRECTS + 1
        assert (KEY_HEADER in send.headers) <= (origin_of(send.url) == SETTINGS.origin)
        assert KEY not in send.url
    assert all(origin_of(a.url) == SETTINGS.origin for a in run.actions if isinstance(a, Probe))


def test_every_answer_a_transport_opened_is_read_or_discarded_before_the_next_request():
    """The transports keep one answer open at a time: the core reads or discards it before sending again."""
    steps = driver().small(Call(EXPORT_PROGRESS, "h"), SETTINGS.url(EXPORT_PROGRESS, "h"))
    assert isinstance(steps.send(None), Send)
    assert steps.send(Head(302, {"Location": "/elsewhere"})) is DISCARD
    assert isinstance(steps.send(None), Send)
    read = steps.send(Head(200, {}))
    assert read == Read(limit=read.limit, strict=True)
    with pytest.raises(StopIteration) as done:
        steps.send(b'{"progressValue": 40}')
    assert done.value.value == Answer(Head(200, {}), b'{"progressValue": 40}')


def test_a_404_on_the_application_origin_is_explained_by_a_keyless_probe():
    steps = driver().small(Call(EXPORT_PROGRESS, "h"), SETTINGS.url(EXPORT_PROGRESS, "h"))
    steps.send(None)
    assert isinstance(steps.send(Head(404, {})), Read)
    probe = steps.send(b"not found")
    assert probe == Probe("GET", SETTINGS.url(EXPORT_PROGRESS, "h"))
    with pytest.raises(ContentExporterNotFoundError, match="does not know export h"):
        steps.send(401)  # an endpoint guards the path: the hash is what is unknown


def test_a_start_whose_connection_broke_after_sending_ends_uncertain_without_a_second_post():
    steps = driver().small(Call(START_EXPORT, "1"), SETTINGS.url(START_EXPORT, "1"), {"rootContentId": "1"})
    assert steps.send(None).method == "POST"
    with pytest.raises(ContentExporterStartUncertainError, match="not repeated"):
        steps.send(Broken("the connection was reset"))


def test_a_refused_connection_is_retried_after_a_wait_even_for_a_start():
    steps = driver().small(Call(START_EXPORT, "1"), SETTINGS.url(START_EXPORT, "1"), {"rootContentId": "1"})
    steps.send(None)
    wait = steps.send(Broken("connection refused", surely_not_sent=True))
    assert isinstance(wait, Wait) and 0.5 <= wait.seconds <= 1.0  # equal jitter over the first 1 s step
    again = steps.send(None)
    assert isinstance(again, Send) and again.first_hop and again.method == "POST"
