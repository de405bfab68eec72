//! The plugin's resource model (`kubernetes-resource-model`): pods as
//! nodes, one per container, as a runner-side node source
//! (`--kubernetes-pods FILE`, a YAML map of these keys).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::super::config::{flag, text};
use super::{KubeAuthConfig, KubeConnection};
use crate::job::NOT_SUPPORTED_YET;

/// The resource model's keys, as the plugin names them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PodsSourceConfig {
    /// A kubeconfig on the runner; it becomes each node's
    /// `kubernetes:config_file`.
    pub config_file: Option<String>,
    /// The API server's URL, with `token_storage_path`.
    pub url: Option<String>,
    /// A path in the runner's key store (`keys/…`) of the bearer token.
    pub token_storage_path: Option<String>,
    pub verify_ssl: Option<String>,
    pub ssl_ca_cert: Option<String>,
    /// A namespace; all of them when empty (the default).
    pub namespace_filter: Option<String>,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    /// `true`: only running containers; else every container not ended.
    pub running: Option<String>,
    /// Static tags and `tag.selector=<attribute>` items, comma-separated
    /// (default `tag.selector=default:status`); `pods` is always a tag.
    pub tags: Option<String>,
    /// `key=value` pairs, space-separated, added to every node.
    pub attributes: Option<String>,
    /// Not supported yet.
    pub mapping: Option<String>,
    /// Not supported yet.
    pub emoticon: Option<String>,
    pub debug: Option<String>,
}

/// A pods source, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodsSource {
    pub connection: KubeConnection,
    pub namespace: Option<String>,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub running_only: bool,
    pub tags: Vec<String>,
    /// Attributes whose value becomes a tag (`tag.selector=`).
    pub tag_selectors: Vec<String>,
    pub attributes: BTreeMap<String, String>,
}

impl PodsSourceConfig {
    pub fn source(&self) -> Result<PodsSource, String> {
        for (key, v) in [("mapping", &self.mapping)] {
            if text(v).is_some() {
                return Err(format!("{key}: {NOT_SUPPORTED_YET}"));
            }
        }
        if flag("emoticon", &self.emoticon, false, false)? {
            return Err(format!("emoticon: {NOT_SUPPORTED_YET}"));
        }
        let auth = KubeAuthConfig {
            config_file: self.config_file.clone(),
            url: self.url.clone(),
            token: self.token_storage_path.clone(),
            verify_ssl: self.verify_ssl.clone(),
            ssl_ca_cert: self.ssl_ca_cert.clone(),
            interpreter: None,
        };
        let connection = auth
            .connection(false)
            .map_err(|e| e.replace("configuration.token", "token_storage_path"))?;
        // A pod node carries its cluster as `kubernetes:config_file`; a URL
        // and token could not follow it to the node executor, which would
        // reach whatever cluster the runner's environment names.
        if matches!(connection, KubeConnection::Url { .. }) {
            return Err(format!(
                "url: {NOT_SUPPORTED_YET} for pods as nodes (their steps could not reach that cluster); give config_file"
            ));
        }
        let (mut tags, mut tag_selectors) = (vec!["pods".to_string()], Vec::new());
        let spec = text(&self.tags).unwrap_or("tag.selector=default:status");
        for item in spec.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match item.strip_prefix("tag.selector=") {
                Some(attr) => tag_selectors.push(attr.trim().to_string()),
                None => tags.push(item.to_string()),
            }
        }
        let mut attributes = BTreeMap::new();
        let words = shlex::split(text(&self.attributes).unwrap_or(""))
            .ok_or("attributes: unbalanced quotes")?;
        for pair in &words {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("attributes: `{pair}` is not key=value"))?;
            attributes.insert(k.to_string(), v.to_string());
        }
        Ok(PodsSource {
            connection,
            namespace: text(&self.namespace_filter).map(str::to_string),
            label_selector: text(&self.label_selector).map(str::to_string),
            field_selector: text(&self.field_selector).map(str::to_string),
            running_only: flag("running", &self.running, false, false)?,
            tags,
            tag_selectors,
            attributes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_source_reads_the_resource_models_keys() {
        let read = |yaml: &str| {
            serde_yaml_ng::from_str::<PodsSourceConfig>(yaml)
                .map_err(|e| e.to_string())
                .and_then(|c| c.source())
        };
        let s = read("config_file: /etc/k8s/c\nnamespace_filter: shop\nlabel_selector: app=web\nrunning: 'true'\ntags: web, tag.selector=default:image\nattributes: env=prod tier=\"front end\"\n").unwrap();
        assert_eq!(
            s.connection,
            KubeConnection::ConfigFile("/etc/k8s/c".into())
        );
        assert_eq!(s.namespace.as_deref(), Some("shop"));
        assert!(s.running_only);
        assert_eq!(s.tags, ["pods", "web"]);
        assert_eq!(s.tag_selectors, ["default:image"]);
        assert_eq!(s.attributes["tier"], "front end");
        let s = read("{}").unwrap();
        assert_eq!(s.tag_selectors, ["default:status"]);
        assert_eq!(s.connection, KubeConnection::Infer);
        assert!(read("mapping: nodename.selector=default:name\n")
            .unwrap_err()
            .contains("not supported yet"));
        assert!(read("labels: x\n")
            .unwrap_err()
            .contains("unknown field `labels`"));
        assert!(read("url: https://k:6443\ntoken_storage_path: token\n")
            .unwrap_err()
            .starts_with("token_storage_path"));
        assert!(read("url: https://k:6443\ntoken_storage_path: keys/t\n")
            .unwrap_err()
            .contains("give config_file"));
    }
}
