//! The console's local accounts: a TOML file of users, each with a role, an argon2id
//! password hash, optionally the tenants they may see, and the API tokens issued to
//! them. Written whole to a temporary file and renamed, owner-only; a hash never leaves
//! this module but to be checked.
//!
//! An API token is `ovs_` + its id + `_` + a secret of 256 random bits, shown once when
//! issued; the file keeps the secret's SHA-256 (a slow hash adds nothing to a secret
//! that cannot be guessed), with the token's own role and tenants, which narrow the
//! user's and never widen them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The most bytes a users file may hold.
const MOST_FILE_BYTES: u64 = 1024 * 1024;
/// The longest password taken: argon2 hashes any length, the limit bounds the work.
pub const MOST_PASSWORD_BYTES: usize = 1024;
pub const LEAST_PASSWORD_CHARS: usize = 12;
/// The most API tokens one user may hold.
pub const MOST_TOKENS: usize = 20;
/// The longest life of an API token, in days.
pub const MOST_TOKEN_DAYS: u32 = 3650;
const TOKEN_PREFIX: &str = "ovs_";
/// Hex digits of a token's id and of its secret.
const TOKEN_ID_LEN: usize = 12;
const TOKEN_SECRET_LEN: usize = 64;

/// What a user may do; each role may do all the one before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs, dashboards, masked timelines.
    Viewer,
    /// Also reveal values (with a reason), purge and the other support actions.
    Support,
    /// Also run now.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Support => "support",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        [Role::Viewer, Role::Support, Role::Admin]
            .into_iter()
            .find(|r| r.name() == text)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// The tenants this user may see; every tenant when empty.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub tenants: BTreeSet<String>,
    /// argon2id, in the PHC string format; none for a user who signs on through the
    /// identity provider only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "token")]
    pub tokens: Vec<Token>,
}

impl User {
    pub fn may_see(&self, tenant: &str) -> bool {
        self.tenants.is_empty() || self.tenants.contains(tenant)
    }
}

/// An API token issued to a user; acts as the user, within its own role and tenants.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// Public: named in the audit log and by `users token revoke`.
    pub id: String,
    /// What the token is for, as its owner said (`nightly export script`).
    #[serde(default)]
    pub label: String,
    /// The most the token may do; the user's role, if lower, wins.
    pub role: Role,
    /// The tenants the token may reach (all the user's when empty).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub tenants: BTreeSet<String>,
    pub created: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    /// SHA-256 of the secret, hex.
    secret_hash: String,
}

impl Token {
    pub fn may_see(&self, tenant: &str) -> bool {
        self.tenants.is_empty() || self.tenants.contains(tenant)
    }
}

/// A token that was checked: its user as the file says now, and the token.
pub struct Bearer<'a> {
    pub user: &'a User,
    pub token: &'a Token,
}

impl Bearer<'_> {
    /// The lower of the user's role and the token's.
    pub fn role(&self) -> Role {
        self.user.role.min(self.token.role)
    }
    pub fn may_see(&self, tenant: &str) -> bool {
        self.user.may_see(tenant) && self.token.may_see(tenant)
    }
}

/// What a new token is to be.
pub struct NewToken {
    pub label: String,
    pub role: Option<Role>,
    pub tenants: BTreeSet<String>,
    pub days: u32,
}

fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `text` has the shape of an API token (checked before the file is read).
pub fn looks_like_token(text: &str) -> bool {
    token_parts(text).is_some()
}

/// A token as presented: its id and secret, if it has the shape of one.
fn token_parts(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, TOKEN_ID_LEN) && hex(secret, TOKEN_SECRET_LEN)).then_some((id, secret))
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default, rename = "user")]
    users: Vec<User>,
}

/// The users file, as read.
#[derive(Debug)]
pub struct Users {
    path: PathBuf,
    users: Vec<User>,
}

/// A user name: what the audit log and the journal's actor name.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
}

impl Users {
    /// Reads the file; a missing file is no users.
    pub fn load(path: &Path) -> anyhow::Result<Users> {
        let text = match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => bail!("cannot read the users file {}: {e}", path.display()),
            Ok(m) if m.len() > MOST_FILE_BYTES => bail!(
                "the users file {} is larger than {MOST_FILE_BYTES} bytes",
                path.display()
            ),
            Ok(_) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the users file {}", path.display()))?,
        };
        // The parser's message quotes the line: only where it is is told.
        let file: File = toml::from_str(&text).map_err(|e| {
            let at = e
                .span()
                .map(|s| format!(" at byte {}", s.start))
                .unwrap_or_default();
            anyhow::anyhow!(
                "the users file {} is not valid{at}; edit it with `opter-visma-sync users`",
                path.display()
            )
        })?;
        let mut seen = BTreeSet::new();
        for (i, u) in file.users.iter().enumerate() {
            if !valid_name(&u.name) || !seen.insert(u.name.clone()) {
                bail!(
                    "the users file {}: user {} has a bad or repeated name",
                    path.display(),
                    i + 1
                );
            }
            let mut ids = BTreeSet::new();
            let tokens_ok = u.tokens.len() <= MOST_TOKENS
                && u.tokens.iter().all(|t| {
                    t.id.len() == TOKEN_ID_LEN
                        && t.secret_hash.len() == 64
                        && ids.insert(t.id.clone())
                });
            if !tokens_ok {
                bail!(
                    "the users file {}: user {} has a bad or repeated API token; revoke it \
                     with `users token revoke`",
                    path.display(),
                    u.name
                );
            }
            if u.hash
                .as_deref()
                .is_some_and(|h| PasswordHash::new(h).is_err())
            {
                bail!(
                    "the users file {}: user {} has no valid password hash; set one with \
                     `users passwd`",
                    path.display(),
                    u.name
                );
            }
        }
        Ok(Users {
            path: path.to_path_buf(),
            users: file.users,
        })
    }

    pub fn list(&self) -> &[User] {
        &self.users
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The user, if the password is theirs. A missing user costs as much time as a wrong
    /// password, so timing does not tell which names exist.
    pub fn check(&self, name: &str, password: &str) -> Option<&User> {
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let user = self.get(name);
        let hash = match user.and_then(|u| u.hash.clone()) {
            Some(h) => h,
            None => DUMMY
                .get_or_init(|| hash("not a password of anyone").unwrap_or_default())
                .clone(),
        };
        let parsed = PasswordHash::new(&hash).ok()?;
        let good = password.len() <= MOST_PASSWORD_BYTES
            && Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok();
        user.filter(|u| good && u.hash.is_some())
    }

    /// Whether the user has a password (else they sign on through the identity provider).
    pub fn has_password(user: &User) -> bool {
        user.hash.is_some()
    }

    /// Adds a user; without a password, they sign on through the identity provider only.
    pub fn add(
        &mut self,
        name: &str,
        role: Role,
        tenants: BTreeSet<String>,
        password: Option<&str>,
    ) -> anyhow::Result<()> {
        if !valid_name(name) {
            bail!("a user name is 1 to 64 letters, digits or - _ . @");
        }
        if self.get(name).is_some() {
            bail!("user {name} exists; change the password with `users passwd {name}`");
        }
        self.users.push(User {
            name: name.to_string(),
            role,
            tenants,
            hash: password.map(hash).transpose()?,
            tokens: Vec::new(),
        });
        self.save()
    }

    pub fn remove(&mut self, name: &str) -> anyhow::Result<()> {
        let before = self.users.len();
        self.users.retain(|u| u.name != name);
        if self.users.len() == before {
            bail!("no user {name}; `users list` shows them");
        }
        self.save()
    }

    pub fn passwd(&mut self, name: &str, password: &str) -> anyhow::Result<()> {
        let hashed = hash(password)?;
        let Some(user) = self.users.iter_mut().find(|u| u.name == name) else {
            bail!("no user {name}; `users list` shows them");
        };
        user.hash = Some(hashed);
        self.save()
    }

    /// The token's user and the token, if `presented` is a live token of a user in the
    /// file; the secret is compared by its hash, in constant time.
    pub fn bearer(&self, presented: &str, now: DateTime<Utc>) -> Option<Bearer<'_>> {
        let (id, secret) = token_parts(presented)?;
        let wanted = secret_hash(secret);
        self.users.iter().find_map(|user| {
            let token = user.tokens.iter().find(|t| t.id == id)?;
            let same = token
                .secret_hash
                .bytes()
                .zip(wanted.bytes())
                .fold(0u8, |d, (a, b)| d | (a ^ b))
                == 0;
            (same && now < token.expires).then_some(Bearer { user, token })
        })
    }

    /// Issues a token to `name`: returns it (the only time its secret is shown) and
    /// what was stored.
    pub fn issue(&mut self, name: &str, new: NewToken) -> anyhow::Result<(String, Token)> {
        let Some(user) = self.users.iter_mut().find(|u| u.name == name) else {
            bail!("no user {name}; `users list` shows them");
        };
        if !(1..=MOST_TOKEN_DAYS).contains(&new.days) {
            bail!("--expires-days is 1 to {MOST_TOKEN_DAYS}");
        }
        let role = new.role.unwrap_or(user.role);
        if role > user.role {
            bail!(
                "{name} is {}; a token may not do more than its user",
                user.role.name()
            );
        }
        if let Some(t) = new.tenants.iter().find(|t| !user.may_see(t)) {
            bail!("{name} may not see tenant {t}; a token may not reach more than its user");
        }
        if new.label.chars().count() > 100 || new.label.chars().any(char::is_control) {
            bail!("--label is one line of at most 100 characters");
        }
        let now = Utc::now();
        user.tokens.retain(|t| t.expires > now);
        if user.tokens.len() >= MOST_TOKENS {
            bail!("{name} holds {MOST_TOKENS} tokens; revoke one first");
        }
        let id = hex::encode(rand::random::<[u8; TOKEN_ID_LEN / 2]>());
        let secret = hex::encode(rand::random::<[u8; TOKEN_SECRET_LEN / 2]>());
        let token = Token {
            id: id.clone(),
            label: new.label,
            role,
            tenants: new.tenants,
            created: now,
            expires: now + chrono::Duration::days(i64::from(new.days)),
            secret_hash: secret_hash(&secret),
        };
        user.tokens.push(token.clone());
        self.save()?;
        Ok((format!("{TOKEN_PREFIX}{id}_{secret}"), token))
    }

    pub fn revoke(&mut self, name: &str, id: &str) -> anyhow::Result<()> {
        let Some(user) = self.users.iter_mut().find(|u| u.name == name) else {
            bail!("no user {name}; `users list` shows them");
        };
        let before = user.tokens.len();
        user.tokens.retain(|t| t.id != id);
        if user.tokens.len() == before {
            bail!("{name} has no token {id}; `users token list {name}` shows them");
        }
        self.save()
    }

    fn save(&self) -> anyhow::Result<()> {
        let text = toml::to_string(&File {
            users: self.users.clone(),
        })?;
        let tmp = self.path.with_extension("toml.new");
        write_owner_only(&tmp, text.as_bytes())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("cannot replace the users file {}", self.path.display()))
    }
}

fn write_owner_only(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// A password's argon2id hash (the crate's default parameters: OWASP's minimum).
fn hash(password: &str) -> anyhow::Result<String> {
    if password.chars().count() < LEAST_PASSWORD_CHARS {
        bail!("a password has at least {LEAST_PASSWORD_CHARS} characters");
    }
    if password.len() > MOST_PASSWORD_BYTES {
        bail!("a password has at most {MOST_PASSWORD_BYTES} bytes");
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_users_log_in_with_their_password_only_and_the_file_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let mut users = Users::load(&path).unwrap();
        assert!(users.list().is_empty());
        let only = BTreeSet::from(["carrier-1".to_string()]);
        users
            .add("eva", Role::Support, only, Some("correct horse battery"))
            .unwrap();
        assert!(users
            .add(
                "eva",
                Role::Admin,
                BTreeSet::new(),
                Some("another long one")
            )
            .is_err());
        assert!(users
            .add("short", Role::Viewer, BTreeSet::new(), Some("short"))
            .is_err());
        users
            .add("sso@carrier.example", Role::Viewer, BTreeSet::new(), None)
            .unwrap();
        let users = Users::load(&path).unwrap();
        assert!(users.check("sso@carrier.example", "").is_none());
        let eva = users.check("eva", "correct horse battery").unwrap();
        assert_eq!(eva.role, Role::Support);
        assert!(eva.may_see("carrier-1") && !eva.may_see("carrier-2"));
        assert!(users.check("eva", "correct horse batterx").is_none());
        assert!(users.check("nobody", "correct horse battery").is_none());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("$argon2id$") && !text.contains("correct horse"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mut users = users;
        users.passwd("eva", "a new long password").unwrap();
        assert!(users.check("eva", "correct horse battery").is_none());
        assert!(users.check("eva", "a new long password").is_some());
        users.remove("eva").unwrap();
        users.remove("sso@carrier.example").unwrap();
        assert!(Users::load(&path).unwrap().list().is_empty());
    }

    #[test]
    fn a_token_acts_within_its_user_and_its_own_bounds_until_revoked_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let mut users = Users::load(&path).unwrap();
        let only = BTreeSet::from(["alpha".to_string(), "beta".to_string()]);
        users
            .add("eva", Role::Support, only, Some("correct horse battery"))
            .unwrap();
        let new = |role, tenants: &[&str]| NewToken {
            label: "script".into(),
            role,
            tenants: tenants.iter().map(|t| t.to_string()).collect(),
            days: 30,
        };
        assert!(users.issue("eva", new(Some(Role::Admin), &[])).is_err());
        assert!(users.issue("eva", new(None, &["gamma"])).is_err());
        let (secret, stored) = users
            .issue("eva", new(Some(Role::Viewer), &["alpha"]))
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&secret[secret.len() - 64..]),
            "the secret is stored"
        );

        let users = Users::load(&path).unwrap();
        let now = Utc::now();
        let bearer = users.bearer(&secret, now).expect("the token is accepted");
        assert_eq!(
            (bearer.user.name.as_str(), bearer.role()),
            ("eva", Role::Viewer)
        );
        assert!(bearer.may_see("alpha") && !bearer.may_see("beta"));
        let mut wrong = secret.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        assert!(users.bearer(&wrong, now).is_none());
        assert!(users.bearer("ovs_not_a_token", now).is_none());
        assert!(users.bearer(&secret, stored.expires).is_none(), "expired");

        let mut users = users;
        users.revoke("eva", &stored.id).unwrap();
        assert!(Users::load(&path).unwrap().bearer(&secret, now).is_none());
    }

    #[test]
    fn a_broken_file_is_told_without_its_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(&path, "[[user]]\nname = \"LEAK-VALUE\nrole = 1\n").unwrap();
        let e = Users::load(&path).unwrap_err().to_string();
        assert!(e.contains("users.toml") && !e.contains("LEAK"), "{e}");
    }
}
