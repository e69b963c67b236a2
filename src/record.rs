//! The two shapes a customer takes inside the connector.
//!
//! `SourceCustomer` is what a source adapter may read from Opter: only the fields the
//! connector is allowed to use. `PermittedCustomer` is what the mapping layer may hand to
//! a sink: the customer's identifiers, its name and one contact person.
//!
//! Architecture invariant: neither type has a field for anything else Opter holds
//! (phones, addresses, corporate ID numbers, notes), so no later stage can leak it.

use chrono::{DateTime, Utc};

/// A customer as read from Opter, already reduced to the fields the connector may use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceCustomer {
    /// Opter's customer code: the key of the customer register.
    pub code: String,
    /// The sales ledger number (digits), when Opter has one.
    pub number: Option<String>,
    pub name: String,
    pub is_active: bool,
    /// Opter's last-changed time; used locally only (change detection, source cursor).
    pub updated: Option<DateTime<Utc>>,
    pub references: Vec<SourceReference>,
}

/// A contact person at the customer (Opter calls them references): name and email only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SourceReference {
    pub name: Option<String>,
    pub email: Option<String>,
    pub is_default: bool,
}

/// The only record a sink accepts: identifiers, customer name and one contact person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermittedCustomer {
    pub code: String,
    pub number: Option<String>,
    pub name: String,
    pub is_active: bool,
    pub contact_name: Option<String>,
    pub contact_email: Option<String>,
}

impl SourceCustomer {
    /// Where the contact person is: the default reference, else the first reference
    /// with an email.
    fn contact_index(&self) -> Option<usize> {
        let refs = &self.references;
        (refs.iter().position(|r| r.is_default))
            .or_else(|| refs.iter().position(|r| has_text(&r.email)))
    }

    /// Reduces the customer to what may leave Opter, keeping its texts rather than
    /// copying them (planning does this for every customer read).
    pub fn into_permitted(self) -> PermittedCustomer {
        let contact = self.contact_index();
        let mut references = self.references;
        let contact = contact.map(|i| references.swap_remove(i));
        let (contact_name, contact_email) = match contact {
            Some(c) => (trimmed(c.name), trimmed(c.email)),
            None => (None, None),
        };
        PermittedCustomer {
            code: self.code,
            number: self.number.filter(|n| !n.trim().is_empty()),
            name: trimmed(Some(self.name)).unwrap_or_default(),
            is_active: self.is_active,
            contact_name,
            contact_email,
        }
    }
}

fn has_text(value: &Option<String>) -> bool {
    value.as_deref().is_some_and(|v| !v.trim().is_empty())
}

/// The text without surrounding white space, if any is left; copied only when trimmed.
fn trimmed(value: Option<String>) -> Option<String> {
    let value = value?;
    match value.trim() {
        "" => None,
        t if t.len() == value.len() => Some(value),
        t => Some(t.to_string()),
    }
}

/// The permitted fields a mapping file may name, fixed in code on purpose: adding one is
/// a privacy decision, not a configuration change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PermittedField {
    CustomerCode,
    CustomerNumber,
    CustomerName,
    ContactName,
    ContactEmail,
    /// Opter's active flag: not personal data, lets the register mirror deactivation.
    IsActive,
}

impl PermittedField {
    pub const ALL: [PermittedField; 6] = [
        PermittedField::CustomerCode,
        PermittedField::CustomerNumber,
        PermittedField::CustomerName,
        PermittedField::ContactName,
        PermittedField::ContactEmail,
        PermittedField::IsActive,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PermittedField::CustomerCode => "customer_code",
            PermittedField::CustomerNumber => "customer_number",
            PermittedField::CustomerName => "customer_name",
            PermittedField::ContactName => "contact_name",
            PermittedField::ContactEmail => "contact_email",
            PermittedField::IsActive => "is_active",
        }
    }

    /// What the field is called in Opter, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            PermittedField::CustomerCode => "customer code",
            PermittedField::CustomerNumber => "sales ledger number (customer_number)",
            PermittedField::CustomerName => "customer name",
            PermittedField::ContactName => "contact name",
            PermittedField::ContactEmail => "contact email",
            PermittedField::IsActive => "active flag",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(name: &str, email: Option<&str>, is_default: bool) -> SourceReference {
        SourceReference {
            name: Some(name.to_string()),
            email: email.map(str::to_string),
            is_default,
        }
    }

    fn customer(references: Vec<SourceReference>) -> SourceCustomer {
        SourceCustomer {
            code: "K1".into(),
            number: None,
            name: " Acme AB ".into(),
            is_active: true,
            updated: None,
            references,
        }
    }

    #[test]
    fn the_default_reference_is_the_contact_even_when_not_first() {
        let c = customer(vec![
            reference("First", Some("first@acme.se"), false),
            reference("Default", None, true),
        ]);
        let p = c.into_permitted();
        assert_eq!(p.contact_name.as_deref(), Some("Default"));
        assert_eq!(p.contact_email, None);
    }

    #[test]
    fn without_a_default_the_first_reference_with_an_email_is_the_contact() {
        let c = customer(vec![
            reference("No Mail", None, false),
            reference("  ", Some(" "), false),
            reference("Has Mail", Some("has@acme.se"), false),
        ]);
        let p = c.into_permitted();
        assert_eq!(p.contact_name.as_deref(), Some("Has Mail"));
        assert_eq!(p.contact_email.as_deref(), Some("has@acme.se"));
        assert_eq!(p.name, "Acme AB");
    }

    #[test]
    fn texts_are_trimmed_and_blank_ones_dropped() {
        let mut c = customer(vec![reference(" Eva Ek ", Some("eva@acme.se\t"), true)]);
        c.number = Some("  ".into());
        let p = c.into_permitted();
        assert_eq!(p.name, "Acme AB");
        assert_eq!(p.contact_name.as_deref(), Some("Eva Ek"));
        assert_eq!(p.contact_email.as_deref(), Some("eva@acme.se"));
        assert_eq!(p.number, None);
        let blank = customer(vec![reference(" ", Some(""), true)]).into_permitted();
        assert_eq!((blank.contact_name, blank.contact_email), (None, None));
    }

    #[test]
    fn no_reference_means_no_contact() {
        let p = customer(vec![reference("No Mail", None, false)]).into_permitted();
        assert_eq!((p.contact_name, p.contact_email), (None, None));
    }

    #[test]
    fn field_names_round_trip_and_unknown_names_are_refused() {
        for f in PermittedField::ALL {
            assert_eq!(PermittedField::from_name(f.name()), Some(f));
        }
        assert_eq!(PermittedField::from_name("phone"), None);
        assert_eq!(PermittedField::from_name("corporate_id_number"), None);
    }
}
