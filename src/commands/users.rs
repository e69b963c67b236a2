//! `users`: the web console's local accounts, in the users file `[console]` names.

use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use secrecy::{ExposeSecret, SecretString};

use crate::cli::{TokenCommand, UsersCommand};
use crate::error::{exit, Error, Result};
use crate::service::console::users::{NewToken, Role, Token, Users, MOST_PASSWORD_BYTES};
use crate::service::tenants::valid_id;
use crate::service::ServiceConfig;

pub fn users(service_file: &Path, command: &UsersCommand) -> Result<ExitCode> {
    let config = ServiceConfig::load(service_file)?;
    let Some(console) = config.console else {
        return Err(Error::config(format!(
            "{}: has no [console] table, so there is no users file: add `[console]` (its \
             users key names the file, users.toml beside it by default), or pass --config \
             with the service file",
            service_file.display()
        )));
    };
    let file = &console.users;
    let mut users = Users::load(file).map_err(|e| Error::config(format!("{e:#}")))?;
    let changed = |what: std::result::Result<(), anyhow::Error>| {
        what.map_err(|e| Error::config(format!("{e:#}")))
    };
    match command {
        UsersCommand::Add(args) => {
            let role = Role::parse(&args.role).ok_or_else(|| Error::config("--role"))?;
            let tenants = tenant_ids(&args.tenants)?;
            if users.get(&args.name).is_some() {
                return Err(Error::config(format!(
                    "user {} exists; change the password with `users passwd {}`",
                    args.name, args.name
                )));
            }
            let password = match args.no_password {
                true => None,
                false => Some(read_password(&args.name)?),
            };
            let password = password.as_ref().map(|p| p.expose_secret());
            changed(users.add(&args.name, role, tenants.clone(), password))?;
            let scope = match tenants.is_empty() {
                true => "every tenant".to_string(),
                false => format!("tenants {}", Vec::from_iter(tenants).join(", ")),
            };
            println!(
                "added {} ({}, {scope}) to {}",
                args.name,
                role.name(),
                file.display()
            );
        }
        UsersCommand::List { json } => {
            let list = users.list();
            if *json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|u| {
                        serde_json::json!({
                            "name": u.name, "role": u.role.name(), "tenants": u.tenants,
                            "password": Users::has_password(u), "tokens": u.tokens.len(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else if list.is_empty() {
                println!(
                    "no users in {}; add the first admin with `users add NAME --role admin`",
                    file.display()
                );
            } else {
                for u in list {
                    let scope = match u.tenants.is_empty() {
                        true => "every tenant".to_string(),
                        false => Vec::from_iter(u.tenants.iter().cloned()).join(", "),
                    };
                    let sign_in = match Users::has_password(u) {
                        true => "password",
                        false => "single sign-on only",
                    };
                    println!("{:<24} {:<8} {sign_in:<20} {scope}", u.name, u.role.name());
                }
            }
        }
        UsersCommand::Remove { name } => {
            changed(users.remove(name))?;
            println!("removed {name} from {}", file.display());
        }
        UsersCommand::Passwd { name } => {
            if users.get(name).is_none() {
                return Err(Error::config(format!(
                    "no user {name}; `users list` shows them"
                )));
            }
            let password = read_password(name)?;
            changed(users.passwd(name, password.expose_secret()))?;
            println!("set the password of {name}");
        }
        UsersCommand::Token(command) => token(&mut users, command)?,
    }
    Ok(ExitCode::from(exit::OK))
}

fn tenant_ids(given: &[String]) -> Result<BTreeSet<String>> {
    let mut tenants = BTreeSet::new();
    for id in given {
        if !valid_id(id) {
            return Err(Error::config(
                "--tenant: a tenant id is letters, digits, '-' or '_' (at most 64): its \
                 file's name without .toml",
            ));
        }
        tenants.insert(id.clone());
    }
    Ok(tenants)
}

fn token_json(name: &str, t: &Token) -> serde_json::Value {
    serde_json::json!({
        "user": name, "id": t.id, "label": t.label, "role": t.role.name(),
        "tenants": t.tenants, "created": t.created, "expires": t.expires,
    })
}

fn token(users: &mut Users, command: &TokenCommand) -> Result<()> {
    let failed = |e: anyhow::Error| Error::config(format!("{e:#}"));
    match command {
        TokenCommand::Add(args) => {
            let role = args
                .role
                .as_deref()
                .map(|r| Role::parse(r).ok_or_else(|| Error::config("--role")))
                .transpose()?;
            let new = NewToken {
                label: args.label.clone(),
                role,
                tenants: tenant_ids(&args.tenants)?,
                days: args.expires_days,
            };
            let (secret, stored) = users.issue(&args.name, new).map_err(failed)?;
            if args.json {
                let mut shown = token_json(&args.name, &stored);
                shown["token"] = secret.into();
                println!("{shown}");
            } else {
                println!("{secret}");
                eprintln!(
                    "issued token {} to {} ({}, until {}); it is shown only now: keep it \
                     where your script reads secrets, and send it as `Authorization: Bearer \
                     TOKEN`",
                    stored.id,
                    args.name,
                    stored.role.name(),
                    stored.expires.format("%Y-%m-%d")
                );
            }
        }
        TokenCommand::List { name, json } => {
            let Some(user) = users.get(name) else {
                return Err(Error::config(format!(
                    "no user {name}; `users list` shows them"
                )));
            };
            if *json {
                let rows: Vec<_> = user.tokens.iter().map(|t| token_json(name, t)).collect();
                println!("{}", serde_json::Value::Array(rows));
            } else if user.tokens.is_empty() {
                println!("{name} has no API token; issue one with `users token add {name}`");
            } else {
                let now = chrono::Utc::now();
                for t in &user.tokens {
                    let scope = match t.tenants.is_empty() {
                        true => "every tenant of the user".to_string(),
                        false => Vec::from_iter(t.tenants.iter().cloned()).join(", "),
                    };
                    let until = match t.expires > now {
                        true => format!("until {}", t.expires.format("%Y-%m-%d")),
                        false => "expired".to_string(),
                    };
                    println!(
                        "{}  {:<8} {until:<16} {scope}  {}",
                        t.id,
                        t.role.name(),
                        crate::output::printable(&t.label)
                    );
                }
            }
        }
        TokenCommand::Revoke { name, id } => {
            users.revoke(name, id).map_err(failed)?;
            println!("revoked token {id} of {name}");
        }
    }
    Ok(())
}

/// One line from stdin; on a terminal asked twice, without echo.
fn read_password(name: &str) -> Result<SecretString> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return read_line(&mut stdin.lock());
    }
    let first = without_echo(|| {
        eprint!("Password for {name}: ");
        let _ = std::io::stderr().flush();
        read_line(&mut stdin.lock())
    })?;
    let again = without_echo(|| {
        eprint!("\nThe same again: ");
        let _ = std::io::stderr().flush();
        read_line(&mut stdin.lock())
    })?;
    eprintln!();
    if first.expose_secret() != again.expose_secret() {
        return Err(Error::config(
            "the two passwords differ; nothing was changed",
        ));
    }
    Ok(first)
}

fn read_line(input: &mut impl BufRead) -> Result<SecretString> {
    let mut line = String::new();
    // One byte past the limit tells a long password from one at the limit.
    let most = (MOST_PASSWORD_BYTES + 2) as u64;
    input
        .by_ref()
        .take(most)
        .read_line(&mut line)
        .map_err(|_| Error::config("the password on stdin is not UTF-8 text"))?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.chars().any(char::is_control) {
        return Err(Error::config(
            "the password on stdin holds a control character (or is longer than \
             1024 bytes); give it as one line",
        ));
    }
    Ok(SecretString::from(password.to_string()))
}

#[cfg(unix)]
fn without_echo<T>(read: impl FnOnce() -> T) -> T {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let stdin = std::io::stdin();
    let Ok(before) = tcgetattr(&stdin) else {
        return read();
    };
    let mut quiet = before.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    let _ = tcsetattr(&stdin, OptionalActions::Now, &quiet);
    let value = read();
    let _ = tcsetattr(&stdin, OptionalActions::Now, &before);
    value
}

#[cfg(not(unix))]
fn without_echo<T>(read: impl FnOnce() -> T) -> T {
    read()
}
