//! A browser without a browser: the inbox's pages and forms over HTTP,
//! with the session cookie kept by hand and redirects not followed, so
//! each response can be looked at.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use super::TestServer;

pub struct Web<'a> {
    pub server: &'a TestServer,
    client: reqwest::Client,
    /// The `Cookie` header to send.
    pub cookie: Option<String>,
}

/// One response.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no Location: {} {}", self.status, self.body))
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    /// The value of the first form field called `name`.
    pub fn field(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no field {name} in {}", self.body))
            + marker.len();
        let end = start + self.body[start..].find('"').unwrap();
        unescape(&self.body[start..end])
    }

    pub fn csrf(&self) -> String {
        self.field("csrf")
    }

    pub fn has(&self, text: &str) -> bool {
        self.body.contains(text)
    }
}

/// The five entities maud writes.
pub fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// `application/x-www-form-urlencoded`, as a browser sends a form.
pub fn form_body(fields: &[(&str, &str)]) -> String {
    fn encode(text: &str) -> String {
        let mut out = String::new();
        for byte in text.bytes() {
            match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                    out.push(char::from(byte));
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{byte:02X}")),
            }
        }
        out
    }
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl<'a> Web<'a> {
    pub fn new(server: &'a TestServer) -> Web<'a> {
        Web {
            server,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    /// Signs in with `token`; panics unless it worked.
    pub async fn sign_in(&mut self, token: &str) -> Page {
        let page = self
            .post("/inbox/login", &[("token", token), ("next", "/inbox")])
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        let cookie = page
            .set_cookies()
            .into_iter()
            .find(|c| c.starts_with("toolgate_session="))
            .expect("a session cookie");
        self.cookie = Some(cookie.split(';').next().unwrap().to_owned());
        page
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Page {
        let request = match &self.cookie {
            Some(cookie) => request.header("cookie", cookie),
            None => request,
        };
        let response = request.send().await.unwrap();
        Page {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        self.send(self.client.get(self.server.url(path))).await
    }

    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.post_with(path, fields, &[]).await
    }

    pub async fn post_with(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Page {
        let mut request = self
            .client
            .post(self.server.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(fields));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }
}
