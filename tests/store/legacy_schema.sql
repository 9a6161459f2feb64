-- The SQLite schema metadata.create_all made before migrations existed (revision 0001).
CREATE TABLE files (
	seq INTEGER NOT NULL, 
	id VARCHAR(64) NOT NULL, 
	tenant VARCHAR(64) NOT NULL, 
	filename TEXT NOT NULL, 
	purpose VARCHAR(32) NOT NULL, 
	bytes BIGINT NOT NULL, 
	created_at BIGINT NOT NULL, 
	expires_at BIGINT, 
	status VARCHAR(16) NOT NULL, 
	status_details TEXT, 
	deleted_at BIGINT, 
	PRIMARY KEY (seq), 
	UNIQUE (id)
);
CREATE INDEX ix_files_tenant_seq ON files (tenant, seq);
CREATE TABLE batches (
	seq INTEGER NOT NULL, 
	id VARCHAR(64) NOT NULL, 
	tenant VARCHAR(64) NOT NULL, 
	input_file_id VARCHAR(64) NOT NULL, 
	endpoint VARCHAR(64) NOT NULL, 
	completion_window VARCHAR(16) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	phase VARCHAR(16) NOT NULL, 
	model TEXT, 
	metadata JSON, 
	errors JSON, 
	output_file_id VARCHAR(64), 
	error_file_id VARCHAR(64), 
	created_at BIGINT NOT NULL, 
	in_progress_at BIGINT, 
	expires_at BIGINT NOT NULL, 
	finalizing_at BIGINT, 
	completed_at BIGINT, 
	failed_at BIGINT, 
	expired_at BIGINT, 
	cancelling_at BIGINT, 
	cancelled_at BIGINT, 
	total INTEGER NOT NULL, 
	completed INTEGER NOT NULL, 
	failed INTEGER NOT NULL, 
	input_tokens BIGINT NOT NULL, 
	cached_tokens BIGINT NOT NULL, 
	output_tokens BIGINT NOT NULL, 
	reasoning_tokens BIGINT NOT NULL, 
	total_tokens BIGINT NOT NULL, 
	output_expires_after INTEGER, 
	stop_reason VARCHAR(16), 
	lease_owner VARCHAR(128), 
	lease_until FLOAT, 
	PRIMARY KEY (seq), 
	UNIQUE (id)
);
CREATE INDEX ix_batches_phase ON batches (phase);
CREATE INDEX ix_batches_tenant_seq ON batches (tenant, seq);
CREATE TABLE shards (
	batch_id VARCHAR(64) NOT NULL, 
	shard_no INTEGER NOT NULL, 
	start_offset BIGINT NOT NULL, 
	end_offset BIGINT NOT NULL, 
	first_line INTEGER NOT NULL, 
	last_line INTEGER NOT NULL, 
	n_tasks INTEGER NOT NULL, 
	done BOOLEAN NOT NULL, 
	lease_owner VARCHAR(128), 
	lease_until FLOAT, 
	PRIMARY KEY (batch_id, shard_no)
);
CREATE INDEX ix_shards_open ON shards (done, batch_id);
CREATE TABLE results (
	batch_id VARCHAR(64) NOT NULL, 
	line_no INTEGER NOT NULL, 
	custom_id TEXT NOT NULL, 
	ok BOOLEAN NOT NULL, 
	data BLOB NOT NULL, 
	PRIMARY KEY (batch_id, line_no)
);
