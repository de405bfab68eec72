use super::*;

fn node(attrs: &[(&str, &str)]) -> Node {
    Node {
        nodename: "win1".into(),
        hostname: "10.0.0.5".into(),
        port: None,
        username: Some("Administrator".into()),
        tags: Default::default(),
        attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn store(path: &str) -> Result<String, String> {
    match path {
        "keys/win/pw" => Ok("from-store".into()),
        _ => Err("path not found".into()),
    }
}

fn read(attrs: &[(&str, &str)], options: &[(&str, &str)]) -> Result<Target, String> {
    let options = options
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    target(&node(attrs), &options, store)
}

/// Each attribute as the plugin reads it, and what it refuses, with the
/// attribute named.
#[test]
fn a_node_s_attributes_are_read_as_the_plugin_reads_them() {
    let pw = ("winrm-password-storage-path", "keys/win/pw");
    let t = read(&[pw], &[]).unwrap();
    assert_eq!(t.endpoint.url(), "http://10.0.0.5:5985/wsman");
    assert_eq!(
        (t.endpoint.auth, t.shell, t.endpoint.password.as_str()),
        (AuthKind::Basic, Shell::Powershell, "from-store")
    );
    // https keeps 5985 unless the port is set, as the plugin does.
    let t = read(
        &[
            pw,
            ("winrm-transport", "https"),
            ("winrm-authtype", "NTLM"),
            ("winrm-nossl", "true"),
        ],
        &[
            ("winrmpassword", "from-option"),
            ("username", "'CORP\\ops'"),
        ],
    )
    .unwrap();
    assert_eq!(t.endpoint.url(), "https://10.0.0.5:5985/wsman");
    assert!(matches!(t.endpoint.tls, Some(Tls::NoVerify)));
    assert_eq!(
        (
            t.endpoint.auth,
            t.endpoint.user.as_str(),
            t.endpoint.password.as_str()
        ),
        (AuthKind::Ntlm, "CORP\\ops", "from-option")
    );
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("winrm-transport", "ftp"), pw], "winrm-transport: `ftp` is not http or https"),
        (&[("winrm-authtype", "kerberos"), pw], "not supported yet: WinRM kerberos authentication"),
        (&[("winrm-shell", "bash"), pw], "winrm-shell: `bash` is not powershell or cmd"),
        (&[("winrm-port", "x"), pw], "winrm-port: `x` is not a port"),
        (
            &[("winrm-operationtimeout", "30"), pw],
            "winrm-readtimeout (30) must be above winrm-operationtimeout (30)",
        ),
        (&[("winrm-proxy", "http://p:3128"), pw], "not supported yet: winrm-proxy (http://p:3128)"),
        (
            &[("winrm-password-storage-path", "keys/none")],
            "cannot read the password at storage path `keys/none`: path not found",
        ),
        (
            &[],
            "no password: set winrm-password-storage-path to a key store path, or give the job option `winrmpassword`",
        ),
    ];
    for (attrs, want) in cases {
        assert_eq!(read(attrs, &[]).err().as_deref(), Some(*want), "{attrs:?}");
    }
}

#[test]
fn powershell_runs_its_command_encoded_and_cmd_as_it_is() {
    assert_eq!(
        command_line(Shell::Cmd, "dir & echo %X%", false),
        "dir & echo %X%"
    );
    let line = command_line(Shell::Powershell, "Write-Output 'hé'", false);
    let b64 = line.strip_prefix("powershell -encodedcommand ").unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let units: Vec<u16> = raw
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(String::from_utf16(&units).unwrap(), "Write-Output 'hé'");
    let line = command_line(Shell::Powershell, "Get-Date", true);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(line.strip_prefix("powershell -encodedcommand ").unwrap())
        .unwrap();
    let units: Vec<u16> = raw
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(
        String::from_utf16(&units).unwrap(),
        "Write-Output \"RUNDECK:WINRM:REMOTE_PID:$PID\"; & {\nGet-Date\n}"
    );
}

/// The plugin's rules: CLIXML reduced to its `<S>` texts, progress
/// records alone to nothing, other text as it is.
#[test]
fn stderr_is_cleaned_of_clixml_as_the_plugin_cleans_it() {
    let error = "#< CLIXML\r\n<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\"><S S=\"Error\">boom_x000D__x000A_</S><S S=\"Error\">again</S></Objs>";
    assert_eq!(clean_stderr(error), "boom\nagain");
    let progress = "#< CLIXML\r\n<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\"><Obj S=\"progress\" RefId=\"0\"><TN RefId=\"0\"><T>System.Management.Automation.PSCustomObject</T></TN><MS><I64 N=\"SourceId\">1</I64><PR N=\"Record\"><AV>Preparing modules for first use.</AV><AI>0</AI><Nil /><PI>-1</PI><PC>-1</PC><T>Completed</T><SR>-1</SR><SD> </SD></PR></MS></Obj></Objs>";
    assert_eq!(clean_stderr(progress), "");
    assert_eq!(clean_stderr("plain error\r\n"), "plain error\r\n");
}

#[test]
fn a_script_runs_by_its_quoted_path_as_rundeck_runs_it() {
    let p = r"C:\WINDOWS\TEMP\1-9-win-dispatch-script.tmp.bat";
    let cases = [
        (Shell::Cmd, None, false, Some("a b"), format!("\"{p}\" a b")),
        (
            Shell::Powershell,
            None,
            false,
            Some("a b"),
            format!("& '{p}' a b"),
        ),
        // Quoting asks for an interpreter; without one the args stay.
        (
            Shell::Powershell,
            None,
            true,
            Some("a"),
            format!("& '{p}' a"),
        ),
        (
            Shell::Cmd,
            Some("cscript //nologo"),
            false,
            None,
            format!("cscript //nologo \"{p}\""),
        ),
        (
            Shell::Cmd,
            Some("bash -c"),
            true,
            Some("x y"),
            format!("bash -c \"{p} x y\""),
        ),
    ];
    for (shell, interpreter, quoted, args, want) in cases {
        assert_eq!(script_line(shell, interpreter, quoted, p, args), want);
    }
    assert_eq!(crlf("a\nb\r\nc\rd"), "a\r\nb\r\nc\r\nd\r\n");
    assert_eq!(crlf(""), "");
}
