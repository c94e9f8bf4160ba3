"""Header names the processor reads (reply route) and writes (dead letters).

The one place they are spelled in processor/, so that they can be taken from
`wire` instead in one edit.
"""

from __future__ import annotations

# The request-reply convention (Spring Kafka's ReplyingKafkaTemplate).
REPLY_TOPIC = "reply-topic"
REPLY_PARTITION = "reply-partition"
CORRELATION_ID = "correlation-id"

# A dead letter's headers: why, and where the original record is.
DLQ_ERROR = "dlq-error"
DLQ_REASON = "dlq-reason"
DLQ_TOPIC = "dlq-topic"
DLQ_PARTITION = "dlq-partition"
DLQ_OFFSET = "dlq-offset"
DLQ_TRUNCATED = "dlq-truncated"
