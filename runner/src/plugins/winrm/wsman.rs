//! The WS-Management messages of a remote shell (MS-WSMV's WinRS):
//! Create, Command, Receive, Signal and Delete, built as pywinrm builds
//! them, and their responses and faults read by namespace URI (never by
//! prefix: pywinrm, pypsrp and Windows each choose their own).

use std::collections::BTreeMap;

use base64::Engine as _;

pub const NS_SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
pub const NS_ADDRESSING: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
pub const NS_WSMAN: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd";
pub const NS_MS_WSMAN: &str = "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd";
pub const NS_SHELL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell";
pub const NS_TRANSFER: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer";
pub const NS_FAULT: &str = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault";

pub const RESOURCE_CMD: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd";
pub const ACTION_CREATE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create";
pub const ACTION_DELETE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete";
pub const ACTION_COMMAND: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command";
pub const ACTION_RECEIVE: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive";
pub const ACTION_SIGNAL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal";
pub const SIGNAL_TERMINATE: &str =
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate";
pub const STATE_DONE: &str =
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done";

/// The fault code of a Receive that saw no output within its
/// OperationTimeout: clients poll again.
pub const FAULT_TIMED_OUT: &str = "2150858793";

/// The envelope size Windows accepts by default, as pywinrm sends it.
const MAX_ENVELOPE: u32 = 153_600;

#[derive(Debug, thiserror::Error)]
pub enum WsmanError {
    #[error("the WinRM response is not XML: {0}")]
    Xml(#[from] roxmltree::Error),
    #[error("the WinRM response has no {0}")]
    Missing(&'static str),
    #[error("the WinRM response relates to message {got}, not {sent}")]
    Unrelated { sent: String, got: String },
    #[error("WinRM fault {code}: {reason}")]
    Fault { code: String, reason: String },
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// One request: its message id, to be matched by the response's
/// `RelatesTo`, and its text.
pub struct Request {
    pub message_id: String,
    pub xml: String,
}

/// What each request's header carries beside its action.
pub struct Header<'a> {
    pub url: &'a str,
    pub operation_timeout_secs: u64,
    pub shell_id: Option<&'a str>,
    pub options: &'a [(&'a str, &'a str)],
}

fn envelope(action: &str, h: &Header<'_>, body: &str) -> Request {
    let message_id = format!("uuid:{}", uuid::Uuid::now_v7());
    let selector = h.shell_id.map_or(String::new(), |id| {
        format!(
            r#"<w:SelectorSet><w:Selector Name="ShellId">{}</w:Selector></w:SelectorSet>"#,
            escape(id)
        )
    });
    let options = if h.options.is_empty() {
        String::new()
    } else {
        let each: String = h
            .options
            .iter()
            .map(|(k, v)| format!(r#"<w:Option Name="{}">{}</w:Option>"#, escape(k), escape(v)))
            .collect();
        format!("<w:OptionSet>{each}</w:OptionSet>")
    };
    let xml = format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<env:Envelope xmlns:env="{NS_SOAP}" xmlns:a="{NS_ADDRESSING}" xmlns:w="{NS_WSMAN}" xmlns:p="{NS_MS_WSMAN}" xmlns:rsp="{NS_SHELL}"><env:Header><a:To>{to}</a:To><a:ReplyTo><a:Address mustUnderstand="true">http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo><w:MaxEnvelopeSize mustUnderstand="true">{MAX_ENVELOPE}</w:MaxEnvelopeSize><a:MessageID>{message_id}</a:MessageID><w:Locale mustUnderstand="false" xml:lang="en-US"/><p:DataLocale mustUnderstand="false" xml:lang="en-US"/><w:OperationTimeout>PT{timeout}S</w:OperationTimeout><w:ResourceURI mustUnderstand="true">{RESOURCE_CMD}</w:ResourceURI><a:Action mustUnderstand="true">{action}</a:Action>{selector}{options}</env:Header><env:Body>{body}</env:Body></env:Envelope>"#,
        to = escape(h.url),
        timeout = h.operation_timeout_secs,
    );
    Request { message_id, xml }
}

/// Create: a shell with the environment given.
pub fn create(h: &Header<'_>, env: &BTreeMap<String, String>) -> Request {
    let vars = if env.is_empty() {
        String::new()
    } else {
        let each: String = env
            .iter()
            .map(|(k, v)| {
                format!(
                    r#"<rsp:Variable Name="{}">{}</rsp:Variable>"#,
                    escape(k),
                    escape(v)
                )
            })
            .collect();
        format!("<rsp:Environment>{each}</rsp:Environment>")
    };
    envelope(
        ACTION_CREATE,
        h,
        &format!(
            "<rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams>{vars}</rsp:Shell>"
        ),
    )
}

/// Command: the whole command line in `rsp:Command`, as the plugin sends it.
pub fn command(h: &Header<'_>, line: &str) -> Request {
    envelope(
        ACTION_COMMAND,
        h,
        &format!(
            "<rsp:CommandLine><rsp:Command>{}</rsp:Command></rsp:CommandLine>",
            escape(line)
        ),
    )
}

pub fn receive(h: &Header<'_>, command_id: &str) -> Request {
    envelope(
        ACTION_RECEIVE,
        h,
        &format!(
            r#"<rsp:Receive><rsp:DesiredStream CommandId="{}">stdout stderr</rsp:DesiredStream></rsp:Receive>"#,
            escape(command_id)
        ),
    )
}

pub fn signal(h: &Header<'_>, command_id: &str, code: &str) -> Request {
    envelope(
        ACTION_SIGNAL,
        h,
        &format!(
            r#"<rsp:Signal CommandId="{}"><rsp:Code>{}</rsp:Code></rsp:Signal>"#,
            escape(command_id),
            escape(code)
        ),
    )
}

pub fn delete(h: &Header<'_>) -> Request {
    envelope(ACTION_DELETE, h, "")
}

/// A response's text, read: a fault becomes [`WsmanError::Fault`], and a
/// response that relates to another message is refused.
pub fn read<'a>(
    doc: &'a roxmltree::Document<'a>,
    sent: &Request,
) -> Result<roxmltree::Node<'a, 'a>, WsmanError> {
    let root = doc.root_element();
    let find = |ns: &str, name: &str| {
        root.descendants()
            .find(|n| n.tag_name().namespace() == Some(ns) && n.tag_name().name() == name)
    };
    if let Some(fault) = find(NS_SOAP, "Fault") {
        let code = fault
            .descendants()
            .find(|n| n.tag_name().name() == "WSManFault")
            .and_then(|n| n.attribute("Code"))
            .map(str::to_string)
            .or_else(|| {
                fault
                    .descendants()
                    .find(|n| n.tag_name().name() == "Value")
                    .and_then(|n| n.text())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let reason = fault
            .descendants()
            .filter(|n| n.tag_name().name() == "Message" || n.tag_name().name() == "Text")
            .filter_map(|n| n.text())
            .map(str::trim)
            .find(|t| !t.is_empty())
            .unwrap_or("no reason given")
            .to_string();
        return Err(WsmanError::Fault { code, reason });
    }
    if let Some(relates) = find(NS_ADDRESSING, "RelatesTo").and_then(|n| n.text()) {
        let same = |s: &str| s.trim().trim_start_matches("uuid:").to_ascii_lowercase();
        if same(relates) != same(&sent.message_id) {
            return Err(WsmanError::Unrelated {
                sent: sent.message_id.clone(),
                got: relates.trim().into(),
            });
        }
    }
    find(NS_SOAP, "Body").ok_or(WsmanError::Missing("Body"))
}

/// A Create response's shell id.
pub fn shell_id(body: roxmltree::Node<'_, '_>) -> Result<String, WsmanError> {
    body.descendants()
        .find(|n| n.attribute("Name") == Some("ShellId"))
        .or_else(|| {
            body.descendants().find(|n| {
                n.tag_name().namespace() == Some(NS_SHELL) && n.tag_name().name() == "ShellId"
            })
        })
        .and_then(|n| n.text())
        .map(|t| t.trim().to_string())
        .ok_or(WsmanError::Missing("ShellId"))
}

pub fn command_id(body: roxmltree::Node<'_, '_>) -> Result<String, WsmanError> {
    body.descendants()
        .find(|n| n.tag_name().namespace() == Some(NS_SHELL) && n.tag_name().name() == "CommandId")
        .and_then(|n| n.text())
        .map(|t| t.trim().to_string())
        .ok_or(WsmanError::Missing("CommandId"))
}

/// What one Receive gave.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The exit code, once the command is done.
    pub done: Option<i32>,
}

pub fn received(body: roxmltree::Node<'_, '_>) -> Result<Received, WsmanError> {
    let mut got = Received::default();
    let b64 = base64::engine::general_purpose::STANDARD;
    for n in body
        .descendants()
        .filter(|n| n.tag_name().namespace() == Some(NS_SHELL))
    {
        match n.tag_name().name() {
            "Stream" => {
                let Some(text) = n.text().map(str::trim).filter(|t| !t.is_empty()) else {
                    continue;
                };
                let bytes = b64
                    .decode(text)
                    .map_err(|_| WsmanError::Missing("base64 in a Stream"))?;
                match n.attribute("Name") {
                    Some("stdout") => got.stdout.extend(bytes),
                    Some("stderr") => got.stderr.extend(bytes),
                    _ => {}
                }
            }
            "CommandState" if n.attribute("State") == Some(STATE_DONE) => {
                // As pywinrm, a command that is done without a readable
                // exit code is an error, never a success.
                let code = n
                    .children()
                    .find(|c| c.tag_name().name() == "ExitCode")
                    .and_then(|c| c.text())
                    .and_then(|t| t.trim().parse::<i64>().ok())
                    .ok_or(WsmanError::Missing("ExitCode of a command that is done"))?;
                // Windows' exit codes are u32s: 4294967295 is -1.
                got.done = Some(code as i32);
            }
            _ => {}
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>() -> Header<'a> {
        Header {
            url: "http://win:5985/wsman",
            operation_timeout_secs: 20,
            shell_id: Some("SHELL-1"),
            options: &[("WINRS_CODEPAGE", "65001")],
        }
    }

    #[test]
    fn requests_are_well_formed_and_escape_what_they_carry() {
        let env = BTreeMap::from([("RD_X".to_string(), "a<b&\"c\"".to_string())]);
        for req in [
            create(&header(), &env),
            command(&header(), "echo <hi> & exit 3"),
            receive(&header(), "CMD"),
            signal(&header(), "CMD", SIGNAL_TERMINATE),
            delete(&header()),
        ] {
            let doc = roxmltree::Document::parse(&req.xml).unwrap();
            let id = doc
                .descendants()
                .find(|n| n.tag_name().name() == "MessageID")
                .and_then(|n| n.text());
            assert_eq!(id, Some(req.message_id.as_str()));
        }
        let c = command(&header(), "echo <hi> & exit 3");
        let doc = roxmltree::Document::parse(&c.xml).unwrap();
        let line = doc
            .descendants()
            .find(|n| n.tag_name().name() == "Command")
            .and_then(|n| n.text());
        assert_eq!(line, Some("echo <hi> & exit 3"));
    }

    fn respond(relates: &str, body: &str) -> String {
        format!(
            r#"<s:Envelope xmlns:s="{NS_SOAP}" xmlns:wsa="{NS_ADDRESSING}" xmlns:rsp="{NS_SHELL}"><s:Header><wsa:RelatesTo>{relates}</wsa:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>"#
        )
    }

    #[test]
    fn responses_are_read_by_namespace_and_related_to_their_request() {
        let sent = receive(&header(), "CMD");
        // Upper-case, as pypsrp and Windows may write it.
        let relates = sent.message_id.to_uppercase().replace("UUID:", "uuid:");
        let text = respond(
            &relates,
            r#"<rsp:ReceiveResponse><rsp:Stream Name="stdout" CommandId="CMD">aGkK</rsp:Stream><rsp:Stream Name="stderr" CommandId="CMD"></rsp:Stream><rsp:CommandState CommandId="CMD" State="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"><rsp:ExitCode>4294967295</rsp:ExitCode></rsp:CommandState></rsp:ReceiveResponse>"#,
        );
        let doc = roxmltree::Document::parse(&text).unwrap();
        let got = received(read(&doc, &sent).unwrap()).unwrap();
        assert_eq!(
            got,
            Received {
                stdout: b"hi\n".to_vec(),
                stderr: vec![],
                done: Some(-1)
            }
        );
        let other = respond("uuid:00000000-0000-0000-0000-000000000000", "");
        let doc = roxmltree::Document::parse(&other).unwrap();
        assert!(matches!(
            read(&doc, &sent),
            Err(WsmanError::Unrelated { .. })
        ));
    }

    #[test]
    fn a_timed_out_receive_is_a_fault_with_its_code() {
        let sent = receive(&header(), "CMD");
        let text = respond(
            &sent.message_id,
            &format!(
                r#"<s:Fault><s:Code><s:Value>s:Receiver</s:Value></s:Code><s:Reason><s:Text xml:lang="en-US">The WS-Management service cannot complete the operation within the time specified in OperationTimeout.</s:Text></s:Reason><s:Detail><f:WSManFault xmlns:f="{NS_FAULT}" Code="2150858793"><f:Message>timed out</f:Message></f:WSManFault></s:Detail></s:Fault>"#
            ),
        );
        let doc = roxmltree::Document::parse(&text).unwrap();
        match read(&doc, &sent) {
            Err(WsmanError::Fault { code, reason }) => {
                assert_eq!(code, FAULT_TIMED_OUT);
                assert!(reason.contains("OperationTimeout"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
