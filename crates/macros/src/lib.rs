//! `#[tool]`: turns a documented async fn into a toolgate tool.
//!
//! Use it through the `toolgate` crate (`toolgate::tool`); the code it
//! generates refers to `::toolgate`.

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Error, FnArg, Ident, ItemFn, LitBool, LitStr, Pat, ReturnType, Token, Type};

/// Makes a tool of an async fn. See `toolgate::tool` for the documentation.
#[proc_macro_attribute]
pub fn tool(attr: TokenStream, item: TokenStream) -> TokenStream {
    let options = match syn::parse::<Options>(attr) {
        Ok(options) => options,
        Err(error) => return error.into_compile_error().into(),
    };
    let function = match syn::parse::<ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let item = proc_macro2::TokenStream::from(item);
            return Error::new(
                item.span(),
                "#[tool] goes on an async fn, e.g. `#[tool] async fn count_emails(last_n_days: i64) -> i64`",
            )
            .into_compile_error()
            .into();
        }
    };
    match expand(options, function) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.into_compile_error().into(),
    }
}

#[derive(Default)]
struct Options {
    name: Option<LitStr>,
    description: Option<LitStr>,
    read_only: Option<bool>,
    destructive: Option<bool>,
    idempotent: Option<bool>,
}

impl Parse for Options {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut options = Options::default();
        let items = Punctuated::<OptionItem, Token![,]>::parse_terminated(input)?;
        for item in items {
            let key = item.key.to_string();
            let duplicate = || {
                Error::new(
                    item.key.span(),
                    format!("#[tool] option `{key}` is given twice"),
                )
            };
            match (key.as_str(), item.value) {
                ("name", OptionValue::Str(value)) => {
                    if options.name.replace(value).is_some() {
                        return Err(duplicate());
                    }
                }
                ("description", OptionValue::Str(value)) => {
                    if options.description.replace(value).is_some() {
                        return Err(duplicate());
                    }
                }
                ("read_only" | "destructive" | "idempotent", value) => {
                    let flag = match value {
                        OptionValue::Flag => true,
                        OptionValue::Bool(value) => value,
                        OptionValue::Str(value) => {
                            return Err(Error::new(
                                value.span(),
                                format!(
                                    "#[tool] option `{key}` takes `true` or `false`, or no value"
                                ),
                            ));
                        }
                    };
                    let slot = match key.as_str() {
                        "read_only" => &mut options.read_only,
                        "destructive" => &mut options.destructive,
                        _ => &mut options.idempotent,
                    };
                    if slot.replace(flag).is_some() {
                        return Err(duplicate());
                    }
                }
                ("name" | "description", _) => {
                    return Err(Error::new(
                        item.key.span(),
                        format!("#[tool] option `{key}` takes a string: `{key} = \"…\"`"),
                    ));
                }
                _ => {
                    return Err(Error::new(
                        item.key.span(),
                        format!(
                            "unknown #[tool] option `{key}`; the options are `name = \"…\"`, `description = \"…\"`, `read_only`, `destructive` and `idempotent`"
                        ),
                    ));
                }
            }
        }
        Ok(options)
    }
}

struct OptionItem {
    key: Ident,
    value: OptionValue,
}

enum OptionValue {
    Flag,
    Bool(bool),
    Str(LitStr),
}

impl Parse for OptionItem {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key: Ident = input.parse()?;
        if !input.peek(Token![=]) {
            return Ok(OptionItem {
                key,
                value: OptionValue::Flag,
            });
        }
        input.parse::<Token![=]>()?;
        let value = if input.peek(LitStr) {
            OptionValue::Str(input.parse()?)
        } else if input.peek(LitBool) {
            OptionValue::Bool(input.parse::<LitBool>()?.value)
        } else {
            return Err(input.error("expected a string or `true`/`false`"));
        };
        Ok(OptionItem { key, value })
    }
}

struct Param {
    name: Ident,
    ty: Type,
    doc: Option<String>,
}

fn expand(options: Options, function: ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let signature = &function.sig;
    let fn_name = &signature.ident;
    if signature.asyncness.is_none() {
        return Err(Error::new(
            signature.fn_token.span(),
            format!("#[tool] functions must be async: write `async fn {fn_name}(…)`"),
        ));
    }
    if let Some(unsafety) = &signature.unsafety {
        return Err(Error::new(
            unsafety.span(),
            "#[tool] functions cannot be `unsafe`",
        ));
    }
    if let Some(abi) = &signature.abi {
        return Err(Error::new(
            abi.span(),
            "#[tool] functions cannot declare an ABI",
        ));
    }
    if let Some(variadic) = &signature.variadic {
        return Err(Error::new(
            variadic.span(),
            "#[tool] functions cannot be variadic",
        ));
    }
    if !signature.generics.params.is_empty() || signature.generics.where_clause.is_some() {
        return Err(Error::new(
            signature.generics.span(),
            "#[tool] functions cannot be generic: the argument schema is computed from concrete parameter types",
        ));
    }

    let (description, argument_docs) = split_docs(&function.attrs);
    let description = match (&options.description, description) {
        (Some(text), _) => text.value(),
        (None, Some(text)) => text,
        (None, None) => {
            return Err(Error::new(
                fn_name.span(),
                format!(
                    "#[tool] function `{fn_name}` needs a doc comment (`/// …`) or `#[tool(description = \"…\")]`: it is the description the model reads"
                ),
            ));
        }
    };

    let mut params = Vec::new();
    for input in &signature.inputs {
        let typed = match input {
            FnArg::Receiver(receiver) => {
                return Err(Error::new(
                    receiver.span(),
                    "#[tool] goes on free functions, not methods: remove `self`",
                ));
            }
            FnArg::Typed(typed) => typed,
        };
        let name = match &*typed.pat {
            Pat::Ident(ident) if ident.by_ref.is_none() && ident.subpat.is_none() => {
                ident.ident.clone()
            }
            other => {
                return Err(Error::new(
                    other.span(),
                    "#[tool] parameters must be plain names (`recipient: String`): each one becomes an argument of the tool",
                ));
            }
        };
        check_param_type(&name, &typed.ty)?;
        let key = name.to_string();
        let key = key.strip_prefix("r#").unwrap_or(&key).to_owned();
        params.push(Param {
            doc: argument_docs
                .iter()
                .find(|(arg, _)| *arg == key)
                .map(|(_, doc)| doc.clone()),
            name,
            ty: (*typed.ty).clone(),
        });
    }
    for (arg, _) in &argument_docs {
        if !params
            .iter()
            .any(|p| p.name.to_string().trim_start_matches("r#") == arg)
        {
            return Err(Error::new(
                fn_name.span(),
                format!(
                    "the doc comment of `{fn_name}` describes an argument `{arg}` that the function does not have"
                ),
            ));
        }
    }

    let tool_name = options
        .name
        .as_ref()
        .map(LitStr::value)
        .unwrap_or_else(|| fn_name.to_string().trim_start_matches("r#").to_owned());
    if tool_name.is_empty()
        || tool_name.len() > 64
        || !tool_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        let span = options.name.as_ref().map_or(fn_name.span(), LitStr::span);
        return Err(Error::new(
            span,
            format!("tool name `{tool_name}` is invalid: use 1 to 64 letters, digits, `_` or `-`"),
        ));
    }

    let struct_name = Ident::new(&pascal_case(&tool_name_for_struct(fn_name)), fn_name.span());
    let vis = &function.vis;
    let field_names: Vec<&Ident> = params.iter().map(|p| &p.name).collect();
    let fields = params.iter().map(|p| {
        let name = &p.name;
        let ty = &p.ty;
        let doc = p.doc.as_ref().map(|doc| quote!(#[doc = #doc]));
        quote! { #doc #name: #ty }
    });
    let hint = |value: Option<bool>| match value {
        Some(value) => quote!(::core::option::Option::Some(#value)),
        None => quote!(::core::option::Option::None),
    };
    let read_only = hint(options.read_only);
    let destructive = hint(options.destructive);
    let idempotent = hint(options.idempotent);
    let returns_result = match &signature.output {
        ReturnType::Default => false,
        ReturnType::Type(_, ty) => is_result(ty),
    };
    let run = if returns_result {
        quote! {
            match #fn_name(#(#field_names),*).await {
                ::core::result::Result::Ok(output) => ::toolgate::__private::output(#tool_name, output),
                ::core::result::Result::Err(error) => ::core::result::Result::Err(::toolgate::ToolError::failed(#tool_name, error)),
            }
        }
    } else {
        quote! { ::toolgate::__private::output(#tool_name, #fn_name(#(#field_names),*).await) }
    };
    let struct_doc =
        format!("The `{tool_name}` tool, made by `#[tool]` from [`{fn_name}`]: {description}");
    let args_struct = format_ident!("__{}Args", struct_name);

    Ok(quote! {
        #function

        #[doc = #struct_doc]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
        #vis struct #struct_name;

        const _: () = {
            #[derive(::toolgate::__private::serde::Deserialize, ::toolgate::__private::schemars::JsonSchema)]
            #[serde(crate = "::toolgate::__private::serde", deny_unknown_fields)]
            #[schemars(crate = "::toolgate::__private::schemars")]
            #[allow(non_camel_case_types)]
            struct #args_struct {
                #(#fields,)*
            }

            #[::toolgate::__private::async_trait]
            impl ::toolgate::Tool for #struct_name {
                fn spec(&self) -> &::toolgate::ToolSpec {
                    static SPEC: ::std::sync::OnceLock<::toolgate::ToolSpec> = ::std::sync::OnceLock::new();
                    SPEC.get_or_init(|| {
                        ::toolgate::ToolSpec::new(
                            #tool_name,
                            #description,
                            ::toolgate::__private::schema_for::<#args_struct>(),
                        )
                        .hints(::toolgate::__private::hints(#read_only, #destructive, #idempotent))
                    })
                }

                async fn call(
                    &self,
                    args: ::toolgate::__private::serde_json::Map<::std::string::String, ::toolgate::__private::serde_json::Value>,
                ) -> ::core::result::Result<::toolgate::__private::serde_json::Value, ::toolgate::ToolError> {
                    let #args_struct { #(#field_names),* } = ::toolgate::__private::parse_args::<#args_struct>(#tool_name, args)?;
                    #run
                }
            }
        };
    })
}

fn tool_name_for_struct(fn_name: &Ident) -> String {
    fn_name.to_string().trim_start_matches("r#").to_owned()
}

fn check_param_type(name: &Ident, ty: &Type) -> syn::Result<()> {
    match ty {
        Type::Reference(_) => Err(Error::new(
            ty.span(),
            format!(
                "parameter `{name}` borrows; tool arguments are deserialised into owned values: use an owned type such as `String` or `Vec<T>`"
            ),
        )),
        Type::ImplTrait(_) => Err(Error::new(
            ty.span(),
            format!(
                "parameter `{name}` has an `impl Trait` type; tool arguments need a concrete type"
            ),
        )),
        Type::Infer(_) | Type::Never(_) | Type::TraitObject(_) | Type::BareFn(_) => {
            Err(Error::new(
                ty.span(),
                format!(
                    "parameter `{name}` has a type that cannot be read from JSON arguments; use a type that implements `Deserialize` and `JsonSchema`"
                ),
            ))
        }
        _ => Ok(()),
    }
}

fn is_result(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "Result"),
        Type::Paren(inner) => is_result(&inner.elem),
        Type::Group(inner) => is_result(&inner.elem),
        _ => false,
    }
}

/// Splits a doc comment into the description and the items of its
/// `# Arguments` section (`* `name` - text`).
fn split_docs(attrs: &[syn::Attribute]) -> (Option<String>, Vec<(String, String)>) {
    let mut lines = Vec::new();
    for attr in attrs {
        if !attr.path().is_ident("doc") {
            continue;
        }
        if let syn::Meta::NameValue(meta) = &attr.meta
            && let syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(text),
                ..
            }) = &meta.value
        {
            let text = text.value();
            // An empty `///` line is a paragraph break, not nothing.
            if text.is_empty() {
                lines.push(String::new());
            }
            for line in text.lines() {
                lines.push(line.strip_prefix(' ').unwrap_or(line).to_owned());
            }
        }
    }
    let mut description = Vec::new();
    let mut arguments: Vec<(String, String)> = Vec::new();
    let mut in_arguments = false;
    for line in lines {
        let trimmed = line.trim();
        if let Some(heading) = trimmed.strip_prefix('#') {
            in_arguments = heading
                .trim_start_matches('#')
                .trim()
                .eq_ignore_ascii_case("arguments");
            if in_arguments {
                continue;
            }
        }
        if !in_arguments {
            description.push(line);
            continue;
        }
        let item = trimmed
            .strip_prefix("* ")
            .or_else(|| trimmed.strip_prefix("- "));
        match item.and_then(parse_argument_item) {
            Some((name, text)) => arguments.push((name, text)),
            None => {
                if let Some((_, text)) = arguments.last_mut()
                    && !trimmed.is_empty()
                {
                    text.push(' ');
                    text.push_str(trimmed);
                }
            }
        }
    }
    let description = description.join("\n").trim().to_owned();
    let description = (!description.is_empty()).then_some(description);
    (description, arguments)
}

/// `` `name` - text `` or `` `name`: text ``.
fn parse_argument_item(item: &str) -> Option<(String, String)> {
    let rest = item.strip_prefix('`')?;
    let (name, rest) = rest.split_once('`')?;
    let text = rest.trim_start().trim_start_matches(['-', ':', '—']).trim();
    Some((name.to_owned(), text.to_owned()))
}

fn pascal_case(snake: &str) -> String {
    let mut out = String::new();
    for part in snake.split(['_', '-']).filter(|p| !p.is_empty()) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "Tool");
    }
    out
}
