-- mbms-mikey.lua: Wireshark / tshark dissector for the MBMS security profile
-- (3GPP TS 33.246 with MIKEY, RFC 3830 / RFC 4563, and SRTP, RFC 3711) of
-- this project (/work/shared/spec/PROFILE.md sections 1, 6 and 8).
--
--   tshark -X lua_script:contrib/wireshark/mbms-mikey.lua -r capture.pcap
--   (or copy this file into the personal Lua plugins folder,
--    ~/.local/lib/wireshark/plugins/, and restart Wireshark)
--
-- Design: a post-dissector, chained AFTER Wireshark's own dissectors.
-- The built-in MIKEY dissector (4.0) keeps decoding the RFC 3830 payloads it
-- knows (HDR, T, RAND, IDi/IDr, SP, KEMAC, V); this script adds one more
-- tree, "MBMS security", with what the built-in one leaves opaque:
--   * the RFC 4563 General Extension "Key ID" (EXT type 2) with its MBMS
--     meaning: Key ID Type MSK (1) = Key Domain ID (3 bytes, shown as
--     MCC-MNC) || MSK ID (Key Group 2 bytes || Key Number 2 bytes), Key
--     Number 0 = "solicited pull"; Key ID Type MTK (2) = MTK ID (2 bytes);
--   * the CS ID map type 1 (RFC 4563 "empty map");
--   * the COUNTER value of the T payload (TS type 2);
--   * the profile message kind (MSK delivery, solicited pull, MSK
--     acknowledgement, MTK delivery);
--   * the MKI of SRTP packets as MSK ID || MTK ID (6 bytes, PROFILE.md 8);
--   * key validity (SEQs/SEQu of an MSK, "inactive" where SEQs > SEQu, RFC
--     1982) and whether the MAC verified. These sit inside the encrypted
--     KEMAC; this script does NOT decrypt (Wireshark 4.0's Lua has no AES
--     or HMAC). It reads them from the packet comment that
--     `mbms pcap decrypt IN.pcap --keylog FILE -o OUT.pcapng` writes on every
--     MIKEY packet it opened (docs/wireshark.md). On a plain capture these
--     fields are absent and the tree says "encrypted".
-- A post-dissector works whatever decoded the datagram as MIKEY: the
-- default port 2269, a "Decode As" (-d udp.port==P,mikey, as `mbms demo`
-- prints), the port preferences or the heuristic of this script. Replacing
-- the built-in dissector would lose its decoding and break "Decode As".
--
-- Ports (Preferences > Protocols > MBMS, or tshark -o mbms.NAME:VALUE):
--   mbms.mikey_ports (default 2269,5008): given to the built-in MIKEY
--     dissector (5008 = the demo's MTK port);
--   mbms.srtp_ports (default 5006): given to the built-in RTP dissector;
--   mbms.heuristics (default TRUE): UDP heuristics for other ports (the
--     free ports of `mbms demo --free-ports`): a datagram that parses
--     completely as a profile MIKEY message (version 1, PRF MIKEY-1, CS ID
--     map 0 or 1, payload chain ending exactly at the end) is MIKEY; an RTP
--     version 2 datagram whose MKI (at the profile's position) names an
--     MSK ID || MTK ID announced by an MTK message earlier in the capture is
--     SRTP;
--   mbms.srtp_tag_len (default 10): SRTP tag length used to find the MKI
--     when no MTK message of the capture announced it.
--
-- Fields (filter with -Y, print with -T fields -e): see the ProtoField list
-- below and docs/wireshark.md.

local mbms = Proto("mbms", "MBMS security (TS 33.246 profile)")

local KEY_ID_TYPES = { [1] = "MSK", [2] = "MTK" }
local MAP_TYPES = { [0] = "SRTP-ID", [1] = "Empty map (RFC 4563)" }

local f = mbms.fields
f.kind = ProtoField.string("mbms.kind", "Message")
f.counter = ProtoField.uint32("mbms.counter", "Counter (T, TS type COUNTER)", base.DEC)
f.cs_id_map_type = ProtoField.uint8("mbms.cs_id_map_type", "CS ID map type", base.DEC, MAP_TYPES)
f.empty_map = ProtoField.bool("mbms.empty_map", "Empty CS ID map (RFC 4563)")
f.key_id_type = ProtoField.uint8("mbms.key_id_type", "Key ID Type", base.DEC, KEY_ID_TYPES)
f.key_id = ProtoField.bytes("mbms.key_id", "Key ID")
f.key_domain_id = ProtoField.bytes("mbms.key_domain_id", "Key Domain ID")
f.key_domain = ProtoField.string("mbms.key_domain", "Key Domain (MCC-MNC)")
f.msk_id = ProtoField.uint32("mbms.msk_id", "MSK ID", base.HEX)
f.key_group = ProtoField.uint16("mbms.key_group", "Key Group", base.DEC)
f.key_number = ProtoField.uint16("mbms.key_number", "Key Number", base.DEC)
f.solicited_pull = ProtoField.bool("mbms.solicited_pull", "Solicited pull (Key Number 0)")
f.mtk_id = ProtoField.uint16("mbms.mtk_id", "MTK ID", base.DEC)
f.mki = ProtoField.bytes("mbms.mki", "SRTP MKI (MSK ID || MTK ID)")
f.srtp_tag_len = ProtoField.uint8("mbms.srtp_tag_len", "SRTP tag length", base.DEC)
f.mac_verified = ProtoField.bool("mbms.mac_verified", "MAC verified (key log)")
f.seq_s = ProtoField.uint16("mbms.seq_s", "SEQs (key validity from)", base.DEC)
f.seq_u = ProtoField.uint16("mbms.seq_u", "SEQu (key validity to)", base.DEC)
f.inactive = ProtoField.bool("mbms.inactive", "Inactive MSK (SEQs > SEQu)")
f.decrypted = ProtoField.string("mbms.decrypted", "Opened by mbms pcap decrypt")

mbms.prefs.mikey_ports = Pref.range("MIKEY ports", "2269,5008",
  "UDP ports decoded as MIKEY (2269: MSK messages; 5008: the demo's MTK messages)", 65535)
mbms.prefs.srtp_ports = Pref.range("SRTP ports", "5006",
  "UDP ports decoded as RTP/SRTP (5006: the demo's SRTP)", 65535)
mbms.prefs.heuristics = Pref.bool("Heuristics", true,
  "Recognise profile MIKEY messages and SRTP with a known MKI on any UDP port")
mbms.prefs.srtp_tag_len = Pref.uint("SRTP tag length", 10,
  "Tag length (bytes) to find the MKI when no MTK message announced it")

local mikey_dissector = Dissector.get("mikey")
local rtp_dissector = Dissector.get("rtp")
local udp_table = DissectorTable.get("udp.port")

local udp_payload_f = Field.new("udp.payload")
local mikey_f = Field.new("mikey")
local rtp_f = Field.new("rtp")
local comment_f = Field.new("frame.comment")

-- MKIs (hex of MSK ID || MTK ID) announced by MTK messages, with the SRTP
-- tag length of their SP payload (RFC 3830 6.10.1 type 11, default 10).
local known_mki = {}

local registered = { mikey = {}, srtp = {} }

local function range_list(r)
  local out = {}
  for part in tostring(r):gmatch("[^,]+") do
    local a, b = part:match("^%s*(%d+)%s*%-%s*(%d+)%s*$")
    if a then
      for p = tonumber(a), tonumber(b) do out[#out + 1] = p end
    else
      local p = tonumber(part:match("^%s*(%d+)%s*$") or "")
      if p then out[#out + 1] = p end
    end
  end
  return out
end

local function register_ports()
  for _, p in ipairs(registered.mikey) do udp_table:remove(p, mikey_dissector) end
  for _, p in ipairs(registered.srtp) do udp_table:remove(p, rtp_dissector) end
  registered.mikey = range_list(mbms.prefs.mikey_ports)
  registered.srtp = range_list(mbms.prefs.srtp_ports)
  for _, p in ipairs(registered.mikey) do udp_table:add(p, mikey_dissector) end
  for _, p in ipairs(registered.srtp) do udp_table:add(p, rtp_dissector) end
end

function mbms.prefs_changed()
  register_ports()
end

function mbms.init()
  known_mki = {}
end

-- Key Domain ID (PROFILE.md 1): byte0 = MCC2<<4 | MCC1, byte1 = MNC3<<4 |
-- MCC3 (MNC3 = 0xF for a 2-digit MNC), byte2 = MNC2<<4 | MNC1.
local function key_domain_text(b0, b1, b2)
  local function d(n) if n <= 9 then return tostring(n) end return nil end
  local digits = { d(b0 % 16), d(math.floor(b0 / 16)), d(b1 % 16) }
  local mnc = { d(b2 % 16), d(math.floor(b2 / 16)) }
  local mnc3 = math.floor(b1 / 16)
  if not (digits[1] and digits[2] and digits[3] and mnc[1] and mnc[2]) then return nil end
  local s = digits[1] .. digits[2] .. digits[3] .. "-" .. mnc[1] .. mnc[2]
  if mnc3 ~= 15 then
    if mnc3 > 9 then return nil end
    s = s .. tostring(mnc3)
  end
  return s
end

-- Parse a MIKEY message (RFC 3830 section 6) by next-payload chaining.
-- Returns a table describing it, or nil if the bytes are not a complete
-- message of the payload types the profile uses.
local MAC_LEN = { [0] = 0, [1] = 20 }
local TS_LEN = { [0] = 8, [1] = 8, [2] = 4 }

local function parse_mikey(r)
  local n = r:len()
  if n < 10 then return nil end
  local m = { exts = {}, ids = {} }
  if r(0, 1):uint() ~= 1 then return nil end
  m.data_type = r(1, 1):uint()
  if m.data_type > 9 then return nil end
  local next_payload = r(2, 1):uint()
  local vprf = r(3, 1):uint()
  m.v = vprf >= 128
  if vprf % 128 ~= 0 then return nil end -- PRF func MIKEY-1 only
  m.cs_count = r(8, 1):uint()
  m.map_type = r(9, 1):uint()
  m.map_range = r(9, 1)
  local off = 10
  if m.map_type == 0 then
    off = off + 9 * m.cs_count
  elseif m.map_type ~= 1 then
    return nil
  end
  if off > n then return nil end
  while next_payload ~= 0 do
    local pt = next_payload
    if off + 1 > n then return nil end
    next_payload = r(off, 1):uint()
    if pt == 5 then -- T
      if off + 2 > n then return nil end
      local ts_type = r(off + 1, 1):uint()
      local len = TS_LEN[ts_type]
      if not len or off + 2 + len > n then return nil end
      if ts_type == 2 then m.counter = r(off + 2, 4) end
      off = off + 2 + len
    elseif pt == 11 then -- RAND
      if off + 2 > n then return nil end
      local len = r(off + 1, 1):uint()
      off = off + 2 + len
    elseif pt == 6 then -- ID
      if off + 4 > n then return nil end
      local len = r(off + 2, 2):uint()
      if off + 4 + len > n then return nil end
      m.ids[#m.ids + 1] = r(off + 4, len)
      off = off + 4 + len
    elseif pt == 21 then -- General Extension
      if off + 4 > n then return nil end
      local ext_type = r(off + 1, 1):uint()
      local len = r(off + 2, 2):uint()
      if off + 4 + len > n then return nil end
      if ext_type == 2 and len >= 3 then -- RFC 4563 Key ID
        local kid_len = r(off + 5, 2):uint()
        if 3 + kid_len <= len then
          m.exts[#m.exts + 1] = {
            range = r(off, 4 + len),
            type_range = r(off + 4, 1),
            key_id_type = r(off + 4, 1):uint(),
            key_id = kid_len > 0 and r(off + 7, kid_len) or nil,
          }
        end
      end
      off = off + 4 + len
    elseif pt == 10 then -- SP
      if off + 5 > n then return nil end
      local prot = r(off + 2, 1):uint()
      local len = r(off + 3, 2):uint()
      if off + 5 + len > n then return nil end
      local p = off + 5
      while p + 2 <= off + 5 + len do
        local t, l = r(p, 1):uint(), r(p + 1, 1):uint()
        if prot == 0 and t == 11 and l == 1 and p + 3 <= n then m.tag_len = r(p + 2, 1):uint() end
        p = p + 2 + l
      end
      off = off + 5 + len
    elseif pt == 1 then -- KEMAC
      if off + 4 > n then return nil end
      local len = r(off + 2, 2):uint()
      if off + 5 + len > n then return nil end
      m.kemac_len = len
      local mac_len = MAC_LEN[r(off + 4 + len, 1):uint()]
      if not mac_len then return nil end
      off = off + 5 + len + mac_len
    elseif pt == 9 then -- V
      if off + 2 > n then return nil end
      local mac_len = MAC_LEN[r(off + 1, 1):uint()]
      if not mac_len then return nil end
      m.has_v = true
      off = off + 2 + mac_len
    elseif pt == 12 then -- ERR
      off = off + 4
    else
      return nil
    end
    if off > n then return nil end
  end
  if off ~= n then return nil end
  return m
end

local function msk_id_tree(t, id)
  -- id: TvbRange of MSK ID (4 bytes) = Key Group || Key Number.
  t:add(f.msk_id, id)
  t:add(f.key_group, id(0, 2))
  local kn = id(2, 2):uint()
  local kn_item = t:add(f.key_number, id(2, 2))
  if kn == 0 then
    kn_item:append_text(" (solicited pull: the current MSK of the Key Group)")
  end
  t:add(f.solicited_pull, id(2, 2), kn == 0)
  return id(0, 2):uint(), kn
end

-- What `mbms pcap decrypt` wrote in the packet comment (its format is
-- documented in docs/wireshark.md; the parts read here are stable).
local function read_comment(t, pinfo)
  local infos = { comment_f() }
  local summary = nil
  for _, c in ipairs(infos) do
    local s = tostring(c.value or c)
    if s:find("^mbms pcap decrypt:") then
      local ct = t:add(f.decrypted, (s:gsub("^mbms pcap decrypt: ", "")))
      if s:find("MAC verified") then
        ct:add(f.mac_verified, true)
      elseif s:find("MAC NOT verified") or s:find("not opened") then
        ct:add(f.mac_verified, false)
      end
      local seq_s, seq_u = s:match("SEQs (%d+), SEQu (%d+)")
      if seq_s then
        seq_s, seq_u = tonumber(seq_s), tonumber(seq_u)
        ct:add(f.seq_s, seq_s)
        ct:add(f.seq_u, seq_u)
        -- RFC 1982 (SERIAL_BITS 16): SEQs > SEQu
        local d = (seq_s - seq_u) % 65536
        local inactive = d ~= 0 and d < 32768
        local it = ct:add(f.inactive, inactive)
        if inactive then
          it:append_text(" (4-way step 1: no MTK may be derived yet)")
          summary = "inactive"
        end
      end
    end
  end
  return summary
end

local function kind_of(m)
  local has_mtk, kn = false, nil
  for _, e in ipairs(m.exts) do
    if e.key_id_type == 2 then has_mtk = true end
    if e.key_id_type == 1 and e.key_id and e.key_id:len() == 7 then kn = e.key_id(5, 2):uint() end
  end
  if has_mtk then return "MTK delivery" end
  if m.has_v or m.data_type == 1 then return "MSK acknowledgement" end
  if kn == 0 then return "Solicited pull" end
  if m.kemac_len then return "MSK delivery" end
  return "MIKEY"
end

local function dissect_mikey(r, pinfo, tree, m)
  local t = tree:add(mbms, r, "MBMS security: MIKEY")
  local kind = kind_of(m)
  t:add(f.kind, kind)
  t:add(f.cs_id_map_type, m.map_range)
  if m.map_type == 1 then
    t:add(f.empty_map, m.map_range, true)
  end
  local info = kind
  if m.counter then
    t:add(f.counter, m.counter)
    info = info .. " counter " .. m.counter:uint()
  end
  for _, e in ipairs(m.exts) do
    local et = t:add(mbms, e.range, "Key ID (RFC 4563 General Extension type 2)")
    et:add(f.key_id_type, e.type_range)
    local id = e.key_id
    if id then
      et:add(f.key_id, id)
      if e.key_id_type == 1 and id:len() == 7 then
        et:add(f.key_domain_id, id(0, 3))
        local text = key_domain_text(id(0, 1):uint(), id(1, 1):uint(), id(2, 1):uint())
        if text then et:add(f.key_domain, id(0, 3), text) end
        local kg, kn = msk_id_tree(et, id(3, 4))
        et:append_text(string.format(": MSK, Key Domain %s, Key Group %d, Key Number %d%s",
          text or tostring(id(0, 3):bytes()), kg, kn, kn == 0 and " (solicited pull)" or ""))
        info = info .. string.format(" MSK %d/%d", kg, kn)
      elseif e.key_id_type == 2 and id:len() == 2 then
        et:add(f.mtk_id, id)
        et:append_text(": MTK ID " .. id:uint())
        info = info .. " MTK " .. id:uint()
      end
    end
  end
  if m.kemac_len then
    if m.kemac_len == 0 then
      t:add(mbms, r, "KEMAC: no key data (Encr data len 0)")
    end
  end
  local s = read_comment(t, pinfo)
  if s then info = info .. " " .. s end
  if m.kemac_len and m.kemac_len > 0 and #{ comment_f() } == 0 then
    t:add(mbms, r, "Key validity (SEQs/SEQu, SPI/MKI) is inside the encrypted KEMAC: "
      .. "open it with `mbms pcap decrypt --keylog`")
  end
  -- Remember the MKI of an MTK message for the SRTP that follows.
  local msk, mtk
  for _, e in ipairs(m.exts) do
    if e.key_id_type == 1 and e.key_id and e.key_id:len() == 7 then msk = e.key_id(3, 4):bytes():tohex() end
    if e.key_id_type == 2 and e.key_id and e.key_id:len() == 2 then mtk = e.key_id:bytes():tohex() end
  end
  if msk and mtk then
    known_mki[string.lower(msk .. mtk)] = m.tag_len or 10
  end
  pinfo.cols.info:append(" [MBMS " .. info .. "]")
end

-- Where the MKI sits in an SRTP packet: the tag length, from an MTK message
-- announcing it (the MKI matches) or the preference.
local function find_mki(r)
  local n = r:len()
  local seen = {}
  for _, tag in pairs(known_mki) do seen[tag] = true end
  for tag in pairs(seen) do
    if n >= 12 + 6 + tag then
      local mki = r(n - tag - 6, 6)
      if known_mki[string.lower(mki:bytes():tohex())] then return mki, tag, true end
    end
  end
  local tag = mbms.prefs.srtp_tag_len
  if n >= 12 + 6 + tag then return r(n - tag - 6, 6), tag, false end
  return nil
end

local function dissect_srtp(r, pinfo, tree)
  local t = tree:add(mbms, r, "MBMS security: SRTP")
  local infos = { comment_f() }
  for _, c in ipairs(infos) do
    local s = tostring(c.value or c)
    if s:find("^mbms pcap decrypt: SRTP opened") then
      read_comment(t, pinfo)
      local mki = s:match("SRTP opened: MKI (%x+)")
      if mki and #mki == 12 then
        t:add(f.mtk_id, tonumber(mki:sub(9, 12), 16))
        t:add(f.msk_id, tonumber(mki:sub(1, 8), 16))
        pinfo.cols.info:append(" [MBMS decrypted, MTK " .. tonumber(mki:sub(9, 12), 16) .. "]")
      end
      return
    end
  end
  local mki, tag, known = find_mki(r)
  if not mki then return end
  local mt = t:add(f.mki, mki)
  if not known then mt:append_text(" (position assumed from the tag length preference)") end
  t:add(f.srtp_tag_len, tag)
  local kg, kn = msk_id_tree(mt, mki(0, 4))
  mt:add(f.mtk_id, mki(4, 2))
  mt:append_text(string.format(": MSK %d/%d, MTK ID %d", kg, kn, mki(4, 2):uint()))
  pinfo.cols.info:append(string.format(" [MBMS MSK %d/%d MTK %d]", kg, kn, mki(4, 2):uint()))
end

function mbms.dissector(tvb, pinfo, tree)
  local p = udp_payload_f()
  if not p then return end
  local r = p.range
  if mikey_f() then
    local m = parse_mikey(r)
    if m then dissect_mikey(r, pinfo, tree, m) end
  elseif rtp_f() then
    dissect_srtp(r, pinfo, tree)
  end
end

local function heuristic(tvb, pinfo, tree)
  if not mbms.prefs.heuristics then return false end
  local n = tvb:len()
  if n < 12 then return false end
  local r = tvb:range(0, n)
  local b0 = r(0, 1):uint()
  if b0 == 1 then
    local m = parse_mikey(r)
    if m and (m.counter or m.kemac_len or m.has_v) then
      mikey_dissector:call(tvb, pinfo, tree)
      return true
    end
    return false
  end
  if math.floor(b0 / 64) == 2 then -- RTP version 2
    local _, _, known = find_mki(r)
    -- or plain RTP that `mbms pcap decrypt` opened (its packet comment)
    for _, c in ipairs({ comment_f() }) do
      if tostring(c.value):find("^mbms pcap decrypt: SRTP opened") then known = true end
    end
    if known then
      rtp_dissector:call(tvb, pinfo, tree)
      return true
    end
  end
  return false
end

register_postdissector(mbms)
mbms:register_heuristic("udp", heuristic)
register_ports()
