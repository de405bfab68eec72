pub mod job_yaml;
