//! What an API key may do: scopes `PERMISSION:PATTERN`, where the permission is `read`, `deploy`,
//! `invoke` or `admin` and the pattern names functions (or, for key-value routes, stores), `*` matching
//! any run of characters. `admin` takes no pattern (or `*`) and allows everything.

use std::fmt;
use std::str::FromStr;

/// The longest pattern a scope takes.
const MAX_PATTERN: usize = 128;

/// What a request does, as far as keys are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read functions, versions, aliases, config (not secret values), records, logs, stats and
    /// key-value data.
    Read,
    /// Change them: deploy, delete, roll back, set aliases, config and secrets, write key-value data.
    Deploy,
    /// Call them: private functions under `/fn`, the API's invoke, the Lambda API, retries and
    /// redrives.
    Invoke,
    /// Everything, and the keys and the audit log besides.
    Admin,
}

impl Permission {
    /// How scopes spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Deploy => "deploy",
            Permission::Invoke => "invoke",
            Permission::Admin => "admin",
        }
    }
}

/// One scope of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    permission: Permission,
    pattern: String,
}

impl Scope {
    /// Whether this scope allows `permission` on `name` (`None`: on every function at once, which only a
    /// pattern of `*` covers).
    pub fn allows(&self, permission: Permission, name: Option<&str>) -> bool {
        if self.permission == Permission::Admin {
            return true;
        }
        self.permission == permission
            && match name {
                Some(name) => glob(&self.pattern, name),
                None => self.pattern == "*",
            }
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (permission, pattern) = match text.split_once(':') {
            Some((permission, pattern)) => (permission, Some(pattern)),
            None => (text, None),
        };
        let permission = match permission {
            "read" => Permission::Read,
            "deploy" => Permission::Deploy,
            "invoke" => Permission::Invoke,
            "admin" => Permission::Admin,
            other => {
                return Err(format!(
                    "scope {text:?}: {other:?} is not a permission (read, deploy, invoke or admin)"
                ))
            }
        };
        let pattern = match (permission, pattern) {
            (Permission::Admin, None | Some("*")) => "*",
            (Permission::Admin, Some(_)) => {
                return Err(format!(
                    "scope {text:?}: admin covers everything and takes no pattern"
                ))
            }
            (_, None | Some("")) => {
                return Err(format!(
                "scope {text:?} names no functions: write {p}:PATTERN, e.g. {p}:hello-* or {p}:*",
                p = permission.as_str(),
            ))
            }
            (_, Some(pattern)) => pattern,
        };
        let valid = pattern.len() <= MAX_PATTERN
            && pattern
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'*'));
        if !valid {
            return Err(format!(
                "scope {text:?}: a pattern is 1-{MAX_PATTERN} letters, digits, `-`, `_`, `.` and `*`"
            ));
        }
        Ok(Scope {
            permission,
            pattern: pattern.to_string(),
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.permission {
            Permission::Admin => f.write_str("admin"),
            p => write!(f, "{}:{}", p.as_str(), self.pattern),
        }
    }
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters (none included).
fn glob(pattern: &str, name: &str) -> bool {
    let (pattern, name) = (pattern.as_bytes(), name.as_bytes());
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was, and the name position it is being tried against.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some((at, from)) = star {
            // Let the last `*` take one more character, and try the rest again.
            p = at + 1;
            n = from + 1;
            star = Some((at, from + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_names() {
        let cases = [
            ("*", "anything", true),
            ("*", "", true),
            ("hello-*", "hello-world", true),
            ("hello-*", "hello-", true),
            ("hello-*", "hello", false),
            ("hello-*", "say-hello-world", false),
            ("*-prod", "api-prod", true),
            ("*-prod", "api-prod-2", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "abcbc", true),
            ("a*b*c", "acb", false),
            ("exact", "exact", true),
            ("exact", "exact2", false),
            ("**", "x", true),
        ];
        for (pattern, name, matches) in cases {
            assert_eq!(glob(pattern, name), matches, "{pattern} ~ {name}");
        }
    }

    #[test]
    fn scopes_parse_and_allow_what_they_name() {
        let deploy: Scope = "deploy:hello-*".parse().unwrap();
        assert!(deploy.allows(Permission::Deploy, Some("hello-a")));
        assert!(!deploy.allows(Permission::Deploy, Some("other")));
        assert!(!deploy.allows(Permission::Read, Some("hello-a")));
        assert!(!deploy.allows(Permission::Deploy, None));
        let read_all: Scope = "read:*".parse().unwrap();
        assert!(read_all.allows(Permission::Read, None));
        assert!(!read_all.allows(Permission::Invoke, Some("x")));
        let admin: Scope = "admin".parse().unwrap();
        assert!(admin.allows(Permission::Deploy, None));
        assert!(admin.allows(Permission::Admin, None));
        assert_eq!(admin, "admin:*".parse().unwrap());
        assert_eq!(deploy.to_string(), "deploy:hello-*");
        assert_eq!(admin.to_string(), "admin");
        for bad in [
            "",
            "write:*",
            "read",
            "read:",
            "admin:",
            "admin:x",
            "read:a/b",
            "invoke:a b",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
    }
}
