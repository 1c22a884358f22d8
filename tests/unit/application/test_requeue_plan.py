"""The requeue policy every broker shares: what happens to each copy, and the report."""

from python_worker.application.dead_letters import RequeuePlan, Step, dead_lettered_message
from python_worker.application.ports import DeadLetteredMessage, DeadLetterSelection

JOB_QUEUES = ("job.high", "job.medium", "job.low")


def copy(
    job_id: str, queue: str | None = "job.high", reason: str = "bad payload"
) -> DeadLetteredMessage:
    body = b'{"id": "%s", "type": "sum", "payload": {}}' % job_id.encode()
    return dead_lettered_message(
        body, queue=queue, reason=reason, dead_lettered_at=None, worker_id=None
    )


def plan_for(selection: DeadLetterSelection) -> RequeuePlan:
    return RequeuePlan(selection, JOB_QUEUES, "job.dead-letter")


def test_puts_back_only_the_selected_and_leaves_the_rest_counted():
    plan = plan_for(DeadLetterSelection(keys=frozenset({"j2"})))

    steps = [plan.step(copy(job_id)) for job_id in ("j1", "j2", "j3")]

    assert steps == [Step.LEAVE, Step.PUT_BACK, Step.LEAVE]
    assert plan.report.left == 2
    assert plan.report.moved == 0  # nothing moved until the adapter says so


def test_drops_a_further_copy_of_a_body_once_one_went_back():
    plan = plan_for(DeadLetterSelection(everything=True))
    first, second = copy("j1"), copy("j1")

    assert plan.step(first) is Step.PUT_BACK
    plan.moved(first)
    assert plan.step(second) is Step.DROP_COPY

    report = plan.finish()
    assert (report.moved, report.merged, report.left) == (1, 1, 0)


def test_puts_back_a_further_copy_when_the_first_could_not_go():
    plan = plan_for(DeadLetterSelection(everything=True))
    first, second = copy("j1"), copy("j1")

    assert plan.step(first) is Step.PUT_BACK
    plan.refused(first, "job.high is not bound")

    assert plan.step(second) is Step.PUT_BACK
    assert plan.report.problems == ["j1: job.high is not bound; left on job.dead-letter"]
    assert plan.report.left == 1


def test_leaves_a_message_with_no_job_queue_and_says_why():
    plan = plan_for(DeadLetterSelection(reason_contains="PAYLOAD"))

    assert plan.step(copy("j1", queue=None)) is Step.LEAVE
    assert plan.step(copy("j2", queue="elsewhere")) is Step.LEAVE

    report = plan.finish()
    assert report.left == 2
    assert report.problems == [
        "j1: no job queue recorded where it came from; left on job.dead-letter",
        "j2: no job queue recorded where it came from; left on job.dead-letter",
    ]


def test_reports_the_selected_keys_that_named_no_message():
    message = copy("j1")
    plan = plan_for(DeadLetterSelection(keys=frozenset({"j1", "nope", message.handle})))

    assert plan.step(message) is Step.PUT_BACK
    plan.moved(message)

    assert plan.finish().missing == ["nope"]
