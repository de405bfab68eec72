//! Rundeck's WinRM plugin (`py-winrm-plugin`) as node attributes name it:
//! a node with `node-executor: WinRMPython` runs its commands over WinRM,
//! configured by the `winrm-*` attributes the plugin reads.

/// The node executor's provider name.
pub const NODE_EXECUTOR: &str = "WinRMPython";
/// The file copier's provider name (`file-copier`).
pub const FILE_COPIER: &str = "WinRMcpPython";

/// `http` (the default) or `https`.
pub const TRANSPORT: &str = "winrm-transport";
/// The listener's port: 5985 by default, for https too, as the plugin has it.
pub const PORT: &str = "winrm-port";
/// `basic` (the default) or `ntlm`; `kerberos` and `credssp` are not built.
pub const AUTH_TYPE: &str = "winrm-authtype";
/// `true`: the https listener's certificate is not checked.
pub const NO_SSL: &str = "winrm-nossl";
/// A CA bundle (PEM) on the runner for the https listener.
pub const CERT_PATH: &str = "winrm-certpath";
/// `powershell` (the plugin's default) or `cmd`.
pub const SHELL: &str = "winrm-shell";
/// The runner's key store path of the user's password.
pub const PASSWORD_STORAGE_PATH: &str = "winrm-password-storage-path";
/// Seconds a Receive waits for output (pywinrm's 20).
pub const OPERATION_TIMEOUT: &str = "winrm-operationtimeout";
/// Seconds a request may take in all (pywinrm's 30); above the above.
pub const READ_TIMEOUT: &str = "winrm-readtimeout";
/// Tries to open the shell (1), and the seconds between them.
pub const RETRY_CONNECTION: &str = "winrm-retry-connection";
pub const RETRY_CONNECTION_DELAY: &str = "winrm-retry-connection-delay";

/// The job option whose value, when set, is the password (the plugin's
/// `winrmpassword`), and the one that names the user (`username`).
pub const PASSWORD_OPTION: &str = "winrmpassword";
pub const USERNAME_OPTION: &str = "username";

/// Attributes the plugin reads that Outpost does not act on yet: a node
/// that sets one to anything but its default fails, saying so.
pub const NOT_BUILT: &[(&str, &str)] = &[
    ("winrm-proxy", ""),
    ("winrm-noproxy", ""),
    ("winrm-disable-tls-12", "false"),
    ("winrm-enable-http-logging", "false"),
    ("clean-escaping", "false"),
];
