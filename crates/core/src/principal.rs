//! Principals: who asks, and who decides.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::policy::Approver;

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Asks for approvals and waits for them; never decides.
    Agent,
    /// Decides approvals they are named for.
    Approver,
    /// Decides any approval, and manages grants and tokens.
    Admin,
}

impl Role {
    /// `agent`, `approver` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }

    /// Parses a role word.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "agent" => Some(Role::Agent),
            "approver" => Some(Role::Approver),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Someone who acts on toolgate: a person at a terminal, a token holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The name decisions are recorded under.
    pub name: String,
    /// What they may do.
    pub role: Role,
    /// The groups they belong to (`group:NAME` approvers).
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Principal {
    /// A principal with a role and no groups.
    pub fn new(name: impl Into<String>, role: Role) -> Self {
        Principal {
            name: name.into(),
            role,
            groups: Vec::new(),
        }
    }

    /// Adds groups.
    pub fn groups(mut self, groups: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.groups.extend(groups.into_iter().map(Into::into));
        self
    }

    /// True when this principal may decide an approval that names
    /// `approvers` (empty: any approver). Agents never may; admins always
    /// may.
    pub fn may_decide(&self, approvers: &[Approver]) -> bool {
        match self.role {
            Role::Agent => false,
            Role::Admin => true,
            Role::Approver => {
                approvers.is_empty()
                    || approvers.iter().any(|approver| match approver {
                        Approver::User(name) => name == &self.name,
                        Approver::Group(group) => self.groups.iter().any(|g| g == group),
                        Approver::Role(role) => role == self.role.as_str(),
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_decide() {
        let ops: Vec<Approver> = vec!["group:ops".parse().unwrap(), "user:carol".parse().unwrap()];
        let alice = Principal::new("alice", Role::Approver).groups(["ops"]);
        let bob = Principal::new("bob", Role::Approver).groups(["sales"]);
        let carol = Principal::new("carol", Role::Approver);
        let agent = Principal::new("bot", Role::Agent).groups(["ops"]);
        let admin = Principal::new("root", Role::Admin);
        assert!(alice.may_decide(&ops));
        assert!(!bob.may_decide(&ops));
        assert!(carol.may_decide(&ops));
        assert!(!agent.may_decide(&ops));
        assert!(!agent.may_decide(&[]));
        assert!(admin.may_decide(&ops));
        assert!(bob.may_decide(&[]));
        assert!(bob.may_decide(&["role:approver".parse().unwrap()]));
        assert_eq!(Role::parse("admin"), Some(Role::Admin));
        assert_eq!(Role::parse("root"), None);
    }
}
