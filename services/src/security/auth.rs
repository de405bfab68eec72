//! API tokens and roles.
//!
//! A token is `opt_<id>_<secret>`. Only the SHA-256 of the whole token is
//! stored (in `OUTPOST_TOKENS`, keyed by id): the secret has 256 random
//! bits, so a slow hash would add nothing. A token carries roles per project
//! (`"*"` for every project): `viewer` reads, `operator` also runs and
//! aborts jobs, `admin` does everything. Runners, tokens and the audit trail
//! are not in any project; they need the role on `"*"`.

use std::collections::BTreeMap;

use async_nats::jetstream;
use chrono::Utc;
use futures::StreamExt;
use outpost_schemas::subjects;
use rand::RngCore;
use sha2::Digest;

use crate::store::bucket::{Bucket, Cas};
use crate::ServiceError;

pub use outpost_schemas::records::{Role, TokenRecord};

/// The project key that stands for every project.
pub const ALL_PROJECTS: &str = "*";

/// Who is calling, once their token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub token_id: String,
    pub roles: BTreeMap<String, Role>,
}

impl Principal {
    /// Whether the principal holds at least `role` on `project` (`None`: on
    /// everything, i.e. through `"*"`).
    pub fn has(&self, role: Role, project: Option<&str>) -> bool {
        let global = self.roles.get(ALL_PROJECTS).is_some_and(|r| *r >= role);
        let local = project
            .and_then(|p| self.roles.get(p))
            .is_some_and(|r| *r >= role);
        global || local
    }

    /// Whether the principal may see `project` at all.
    pub fn sees(&self, project: &str) -> bool {
        self.has(Role::Viewer, Some(project))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Invalid(String),
    #[error("no token {0}")]
    NotFound(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

fn nats(e: impl std::fmt::Display) -> AuthError {
    AuthError::Service(ServiceError::Nats(e.to_string()))
}

pub fn hash(token: &str) -> String {
    data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(token.as_bytes()))
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    data_encoding::HEXLOWER.encode(&b)
}

/// Parses role specs: `admin` (on `*`), `ops=operator`, `*=viewer`.
pub fn parse_roles(specs: &[String]) -> Result<BTreeMap<String, Role>, String> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let (project, role) = match spec.split_once('=') {
            Some((p, r)) => (p.trim(), r.trim()),
            None => (ALL_PROJECTS, spec.trim()),
        };
        let role = match role {
            "admin" => Role::Admin,
            "operator" => Role::Operator,
            "viewer" => Role::Viewer,
            other => {
                return Err(format!(
                    "unknown role `{other}`: use admin, operator or viewer"
                ))
            }
        };
        if project.is_empty() {
            return Err(format!("role spec `{spec}` names no project"));
        }
        out.insert(project.to_string(), role);
    }
    if out.is_empty() {
        return Err("a token needs at least one role".into());
    }
    Ok(out)
}

#[derive(Clone)]
pub struct Tokens {
    kv: Bucket,
}

impl Tokens {
    pub async fn open(js: &jetstream::Context) -> Result<Self, ServiceError> {
        Ok(Tokens {
            kv: Bucket::open(js, subjects::TOKENS_BUCKET).await?,
        })
    }

    /// Creates a token; the clear text is returned here and only here.
    pub async fn create(
        &self,
        name: &str,
        roles: BTreeMap<String, Role>,
        created_by: &str,
    ) -> Result<(TokenRecord, String), AuthError> {
        if name.trim().is_empty() {
            return Err(AuthError::Invalid("a token needs a name".into()));
        }
        let id = random_hex(8);
        let token = format!("opt_{id}_{}", random_hex(32));
        let rec = TokenRecord {
            id: id.clone(),
            name: name.trim().to_string(),
            hash: hash(&token),
            roles,
            created: Utc::now(),
            created_by: created_by.into(),
            revoked: None,
        };
        self.kv
            .raw()
            .create(&id, serde_json::to_vec(&rec).expect("record").into())
            .await
            .map_err(nats)?;
        Ok((rec, token))
    }

    pub async fn get(&self, id: &str) -> Result<Option<(TokenRecord, u64)>, AuthError> {
        Ok(self.kv.get(id).await?)
    }

    pub async fn list(&self) -> Result<Vec<TokenRecord>, AuthError> {
        let mut keys = self.kv.raw().keys().await.map_err(nats)?;
        let mut out = Vec::new();
        while let Some(k) = keys.next().await {
            if let Some((rec, _)) = self.get(&k.map_err(nats)?).await? {
                out.push(rec);
            }
        }
        out.sort_by_key(|t| t.created);
        Ok(out)
    }

    /// Marks a token revoked; it authenticates nothing from then on.
    pub async fn revoke(&self, id: &str) -> Result<TokenRecord, AuthError> {
        let now = Utc::now();
        self.kv
            .modify(id, |rec: Option<TokenRecord>| {
                let mut rec = rec.ok_or_else(|| AuthError::NotFound(id.into()))?;
                rec.revoked.get_or_insert(now);
                Ok(Cas::Write(rec.clone(), rec))
            })
            .await
    }

    /// The principal a token stands for, if it is genuine and not revoked.
    pub async fn verify(&self, token: &str) -> Result<Option<Principal>, AuthError> {
        let Some(id) = token
            .strip_prefix("opt_")
            .and_then(|rest| rest.split_once('_'))
            .map(|(id, _)| id)
            .filter(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        else {
            return Ok(None);
        };
        let Some((rec, _)) = self.get(id).await? else {
            return Ok(None);
        };
        if rec.revoked.is_some() || !constant_time_eq(rec.hash.as_bytes(), hash(token).as_bytes()) {
            return Ok(None);
        }
        Ok(Some(Principal {
            name: rec.name,
            token_id: rec.id,
            roles: rec.roles,
        }))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where a route's project comes from, for the role check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectOf {
    /// The `{project}` path parameter.
    Path,
    /// The project of the job `{id}`.
    Job,
    /// The project of the execution `{id}`.
    Execution,
}

/// What a route demands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// No token (health checks, the UI's page itself).
    Nothing,
    /// Any valid token; the handler filters by project.
    AnyToken,
    /// A role on every project (`"*"`).
    Global(Role),
    /// A role on the route's project.
    Project(Role, ProjectOf),
}

/// The access policy, one line per route. Unknown routes need global admin,
/// so a route added without a line here fails closed.
pub fn policy(method: &str, route: &str) -> Need {
    use Need::*;
    use ProjectOf as P;
    use Role::*;
    let read = method == "GET" || method == "HEAD";
    match (read, route) {
        (true, "/") | (true, "/api/v1/health") | (true, "/api/v1/openapi.json") => Nothing,
        (true, "/api/v1/projects") => AnyToken,
        (false, "/api/v1/projects") => Global(Admin),
        (true, "/api/v1/project/{project}/jobs")
        | (true, "/api/v1/project/{project}/jobs/export")
        | (true, "/api/v1/project/{project}/job/{*name}")
        | (true, "/api/v1/project/{project}/executions")
        | (true, "/api/v1/project/{project}/resources") => Project(Viewer, P::Path),
        (false, "/api/v1/project/{project}/jobs/import")
        | (false, "/api/v1/project/{project}/resources") => Project(Admin, P::Path),
        // Configuration may hold what only a project's admins should read.
        (_, "/api/v1/project/{project}/config") | (_, "/api/v1/project/{project}/config/{key}") => {
            Project(Admin, P::Path)
        }
        (true, "/api/v1/job/{id}") => Project(Viewer, P::Job),
        (false, "/api/v1/job/{id}") => Project(Admin, P::Job),
        (false, "/api/v1/job/{id}/run") => Project(Operator, P::Job),
        (true, "/api/v1/execution/{id}")
        | (true, "/api/v1/execution/{id}/output")
        | (true, "/api/v1/execution/{id}/output/stream") => Project(Viewer, P::Execution),
        (false, "/api/v1/execution/{id}/abort") => Project(Operator, P::Execution),
        (true, "/api/v1/runners") => AnyToken,
        (true, "/api/v1/runners/enrolled") => Global(Viewer),
        (true, "/api/v1/audit") | (true, "/api/v1/deadletters") => Global(Viewer),
        _ => Global(Admin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(roles: &[(&str, Role)]) -> Principal {
        Principal {
            name: "t".into(),
            token_id: "0".into(),
            roles: roles.iter().map(|(p, r)| (p.to_string(), *r)).collect(),
        }
    }

    #[test]
    fn roles_are_ordered_and_scoped() {
        let ops = principal(&[("ops", Role::Operator)]);
        assert!(ops.has(Role::Viewer, Some("ops")));
        assert!(ops.has(Role::Operator, Some("ops")));
        assert!(!ops.has(Role::Admin, Some("ops")));
        assert!(!ops.has(Role::Viewer, Some("web")));
        assert!(!ops.has(Role::Viewer, None));
        let admin = principal(&[("*", Role::Admin)]);
        assert!(admin.has(Role::Admin, Some("anything")));
        assert!(admin.has(Role::Admin, None));
    }

    #[test]
    fn role_specs_parse_or_say_why_not() {
        let r = parse_roles(&["admin".into(), "ops=viewer".into()]).unwrap();
        assert_eq!(r["*"], Role::Admin);
        assert_eq!(r["ops"], Role::Viewer);
        let err = parse_roles(&["ops=root".into()]).unwrap_err();
        assert!(err.contains("unknown role `root`"), "{err}");
        assert!(parse_roles(&[]).is_err());
    }

    #[test]
    fn unknown_routes_fail_closed() {
        assert_eq!(
            policy("POST", "/api/v1/new-thing"),
            Need::Global(Role::Admin)
        );
        assert_eq!(
            policy("GET", "/api/v1/new-thing"),
            Need::Global(Role::Admin)
        );
    }
}
