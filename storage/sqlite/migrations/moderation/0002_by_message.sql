-- C1: a `remove` erases what the reports and the earlier acts of the same message kept
-- (SqliteModerationStore.record_act): found by the message, not by a scan of the whole
-- report and act logs, which only grow.
CREATE INDEX reports_by_message ON reports (conv_id, seq) WHERE conv_id IS NOT NULL;
CREATE INDEX acts_by_message ON acts (conv_id, seq) WHERE conv_id IS NOT NULL;
