//! The `Resource` trait: static type information every kind carries (group, version, kind, plural,
//! scope), and the macro that declares a top-level kind.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::meta::ObjectMeta;

/// A top-level API kind stored by the API server.
pub trait Resource:
    Serialize + DeserializeOwned + Clone + Default + Send + Sync + std::fmt::Debug + 'static
{
    const KIND: &'static str;
    /// API group; `""` is the core group.
    const GROUP: &'static str;
    const VERSION: &'static str;
    /// `v1` or `apps/v1`.
    const API_VERSION: &'static str;
    /// Lower-case plural used in REST paths.
    const PLURAL: &'static str;
    const SINGULAR: &'static str;
    const NAMESPACED: bool;
    const SHORT_NAMES: &'static [&'static str];

    fn meta(&self) -> &ObjectMeta;
    fn meta_mut(&mut self) -> &mut ObjectMeta;
    /// Set `apiVersion` and `kind` to this type's values.
    fn set_type_meta(&mut self);
    fn type_meta(&self) -> (&str, &str);

    fn name(&self) -> &str {
        self.meta().name()
    }
    fn namespace(&self) -> &str {
        self.meta().namespace()
    }
    fn resource_version(&self) -> &str {
        self.meta().resource_version()
    }
    fn uid(&self) -> &str {
        self.meta().uid()
    }
    /// `deployments.apps`, `pods` — the name kubectl prints in errors.
    fn group_resource() -> String {
        if Self::GROUP.is_empty() {
            Self::PLURAL.to_string()
        } else {
            format!("{}.{}", Self::PLURAL, Self::GROUP)
        }
    }
}

/// Declare a top-level kind: `apiVersion`, `kind`, `metadata` plus the given fields.
#[macro_export]
macro_rules! kind {
    (
        $(#[$attr:meta])*
        $name:ident {
            group: $group:expr, version: $version:expr, api_version: $av:expr,
            plural: $plural:expr, singular: $singular:expr, namespaced: $ns:expr,
            short: [$($short:expr),*]
        }
        { $($(#[$fattr:meta])* pub $field:ident : $fty:ty,)* }
    ) => {
        $(#[$attr])*
        #[serde_with::skip_serializing_none]
        #[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            #[serde(default)]
            pub api_version: String,
            #[serde(default)]
            pub kind: String,
            #[serde(default)]
            pub metadata: $crate::meta::ObjectMeta,
            $($(#[$fattr])* pub $field: $fty,)*
        }

        impl $crate::resource::Resource for $name {
            const KIND: &'static str = stringify!($name);
            const GROUP: &'static str = $group;
            const VERSION: &'static str = $version;
            const API_VERSION: &'static str = $av;
            const PLURAL: &'static str = $plural;
            const SINGULAR: &'static str = $singular;
            const NAMESPACED: bool = $ns;
            const SHORT_NAMES: &'static [&'static str] = &[$($short),*];
            fn meta(&self) -> &$crate::meta::ObjectMeta { &self.metadata }
            fn meta_mut(&mut self) -> &mut $crate::meta::ObjectMeta { &mut self.metadata }
            fn set_type_meta(&mut self) {
                self.api_version = $av.to_string();
                self.kind = stringify!($name).to_string();
            }
            fn type_meta(&self) -> (&str, &str) { (&self.api_version, &self.kind) }
        }

        impl $name {
            /// An empty object with `apiVersion`/`kind` set and the given metadata.
            pub fn with_meta(metadata: $crate::meta::ObjectMeta) -> Self {
                let mut o = Self { metadata, ..Default::default() };
                $crate::resource::Resource::set_type_meta(&mut o);
                o
            }
        }
    };
}
