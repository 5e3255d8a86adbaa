"""What a user sees: ``supervisor.py up`` (embedded) as a child process with the SNS endpoint
on, a bounce POSTed to it, and ``supervisor.py status`` / ``search`` showing the email's whole
history, the feedback included."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from actors.testing.localservices import free_port
from actors.testing.sns import (
    TOPIC,
    SnsSigner,
    fresh,
    open_sns_host,
    ses_event,
    sns_notification,
)
from tests.support.embedded_process import cli, embedded_env, running_embedded
from tests.support.waiting import poll_until


async def test_status_and_search_show_the_feedback(tmp_path: Path) -> None:
    signer = SnsSigner()
    http_port = free_port()
    async with open_sns_host(tmp_path / "sns", signer) as sns:
        env = embedded_env(
            tmp_path,
            MAILACTORS__HTTP__ENABLED="true",
            MAILACTORS__HTTP__PORT=str(http_port),
            MAILACTORS__FEEDBACK__LEDGER_PATH=str(tmp_path / "feedback.sqlite3"),
            MAILACTORS__FEEDBACK__SES__ENABLED="true",
            MAILACTORS__FEEDBACK__SES__HOST_PATTERN=r"localhost:\d+",
            MAILACTORS__FEEDBACK__SES__CA_FILE=sns.ca,
            MAILACTORS__FEEDBACK__SES__TOPIC_ARNS=json.dumps([TOPIC]),
        )
        async with running_embedded(env, tmp_path / "up.log"):
            sent = await cli(
                env, "send", "--to", "ada@example.org", "--template", "welcome",
                "--var", "name=Ada", "--var", "product=Acme",
            )  # fmt: skip
            assert sent.returncode == 0, sent.stderr.decode()
            event_id = json.loads(sent.stdout)["eventId"]

            async def status() -> dict[str, object]:
                done = await cli(env, "status", event_id)
                assert done.returncode == 0, done.stderr.decode()
                document: dict[str, object] = json.loads(done.stdout)
                return document

            async def has(wanted: str) -> bool:
                return (await status())["status"] == wanted

            await poll_until(lambda: has("SENT"), timeout=30, what="SENT")
            body = sns_notification(
                ses_event("Bounce", event_id, "ada@example.org"), sns.cert_url, signer,
                message_id=fresh(),
            )  # fmt: skip
            async with httpx.AsyncClient() as http:
                reply = await http.post(
                    f"http://127.0.0.1:{http_port}/feedback/ses", content=json.dumps(body)
                )
            assert reply.status_code == 200, reply.text
            await poll_until(lambda: has("BOUNCED"), timeout=30, what="BOUNCED")
            document = await status()
            history = document["history"]
            assert isinstance(history, list)
            assert [h["status"] for h in history] == ["SENT", "BOUNCED"]
            assert history[1]["feedback"]["bounceType"] == "hard"
            assert history[1]["feedback"]["statusCode"] == "5.1.1"
            assert history[1]["feedback"]["source"] == "ses"
            found = await cli(env, "search", "--status", "bounced")
            assert found.returncode == 0, found.stderr.decode()
            lines = [json.loads(line) for line in found.stdout.decode().splitlines()]
            assert lines[0]["eventId"] == event_id and lines[-1]["total"] == 1
