// Every word the page shows, in Korean and English: the one source of its labels. The HTML
// only names them (data-i18n="key") and applyLabels() fills them in.

const LABELS = {
  ko: {
    playground: "플레이그라운드", signIn: "로그인", signOut: "로그아웃", anonymous: "익명 사용자",
    signedInAs: "로그인:", characters: "캐릭터", dropCard: "캐릭터 카드(PNG 또는 JSON)를 여기에 놓거나",
    chooseCard: "파일 선택", mine: "내 캐릭터", presets: "기본 캐릭터", create: "새 캐릭터 만들기",
    name: "이름", persona: "페르소나", voice: "목소리", createButton: "만들기", chat: "채팅",
    talkingWith: "대화 상대", ttsMode: "음성", ttsRealtime: "실시간", ttsDelayed: "지연",
    ttsOnClick: "클릭할 때", ttsOff: "끄기", newSession: "새 대화", send: "보내기",
    avatar3d: "3D 아바타", make3d: "만들기", choose: "선택", export: "내보내기",
    imported: "가져왔습니다:", created: "만들었습니다:", summarized: "이전 대화를 요약했습니다.",
    retryAfter: "다시 시도까지", play: "듣기", pickCharacter: "먼저 캐릭터를 고르세요.",
    uploading: "올리는 중...", failed: "실패:", switchLanguage: "English", backend: "만드는 곳",
    backendDefault: "서버 기본값", backendRelief: "CPU (부조)", backendHunyuan: "GPU (Hunyuan3D-2, 로그인 필요)",
    gpuNeedsSignIn: "GPU로 만드는 것은 로그인한 사용자만 할 수 있습니다 (GPU 시간은 한정되어 있습니다). 로그인하거나 CPU (부조)를 고르세요.",
    done3d: "완성!", signInFailed: "로그인하지 못했습니다", speechFailed: "음성을 만들지 못했습니다:",
    speechLate: "음성 파일이 아직 없습니다.", cutOff: "응답이 중간에 끊겼습니다.",
    iAm: "나는", noPersona: "— 없음 —", newPersona: "새 페르소나", personaDescription: "설명",
    previousSwipe: "이전 버전", nextSwipe: "다음 버전", temperature: "온도 (비우면 캐릭터 기본값)",
    conversations: "대화 목록", emptyChat: "(빈 대화)", removeChat: "대화 삭제",
    confirmRemoveChat: "이 대화를 삭제할까요?", exportChat: "대화 내보내기", importChat: "대화 가져오기",
    edit: "수정", save: "저장", cancel: "취소", remove: "삭제", confirmRemove: "이 메시지를 삭제할까요?",
    branch: "여기서 갈라지기", regenerate: "다시 생성", continueReply: "이어 쓰기", answer: "답장 받기",
    stop: "멈추기",
    interrupted: "중단됨",
    modelSaw: "모델이 본 것", part: "부분", tokens: "토큰", partSystem: "시스템", partCharacter: "캐릭터",
    partPersona: "사용자 페르소나", partLore: "로어", partExamples: "예시 대화", partSummary: "요약",
    partMemories: "기억", memoriesUsed: "들어간 기억", pinnedMemory: "고정",
    partHistory: "대화", partPostHistory: "마지막 지시", partReserved: "응답 몫", loreFired: "들어간 로어 항목", noneFired: "없음",
    loreLeftOut: "빠진 로어 항목", loreEntry: "항목", loreKey: "키", lorePlace: "위치", loreReason: "이유",
    placeBeforeChar: "캐릭터 앞", placeAfterChar: "캐릭터 뒤", placeDepth: "대화 속, 끝에서",
    reasonDisabled: "꺼져 있음", reasonSecondaryKey: "보조 키가 없음", reasonBudget: "토큰 예산 초과",
    reasonBadRegex: "잘못된 정규식", reasonProbability: "확률에서 빠짐",
    reasonGroup: "같은 그룹의 다른 항목이 들어감", reasonDelayed: "재귀 검색 차례가 오지 않음",
    examplesLeftOut: "빠진 예시 대화",
  },
  en: {
    playground: "Playground", signIn: "Sign in", signOut: "Sign out", anonymous: "Anonymous",
    signedInAs: "Signed in:", characters: "Characters", dropCard: "Drop a Character Card (PNG or JSON) here, or",
    chooseCard: "choose a file", mine: "My characters", presets: "Presets", create: "Create a character",
    name: "Name", persona: "Persona", voice: "Voice", createButton: "Create", chat: "Chat",
    talkingWith: "Talking with", ttsMode: "Speech", ttsRealtime: "Realtime", ttsDelayed: "Delayed",
    ttsOnClick: "On click", ttsOff: "Off", newSession: "New conversation", send: "Send",
    avatar3d: "3D avatar", make3d: "Make", choose: "Choose", export: "Export",
    imported: "Imported:", created: "Created:", summarized: "Older turns were summarized.",
    retryAfter: "Retry-After", play: "Play", pickCharacter: "Choose a character first.",
    uploading: "Uploading...", failed: "Failed:", switchLanguage: "한국어", backend: "Made by",
    backendDefault: "Server default", backendRelief: "CPU (relief)", backendHunyuan: "GPU (Hunyuan3D-2, sign-in)",
    gpuNeedsSignIn: "Making models on the GPU is for signed-in users (GPU time is scarce). Sign in, or choose CPU (relief).",
    done3d: "Done!", signInFailed: "Sign-in failed", speechFailed: "No speech for a sentence:",
    speechLate: "The speech file has not appeared.", cutOff: "The reply was cut off.",
    iAm: "I am", noPersona: "— none —", newPersona: "New persona", personaDescription: "Description",
    previousSwipe: "Previous version", nextSwipe: "Next version",
    temperature: "Temperature (empty: the character's)",
    conversations: "Conversations", emptyChat: "(empty)", removeChat: "Delete conversation",
    confirmRemoveChat: "Delete this conversation?", exportChat: "Export chat", importChat: "Import chat",
    edit: "Edit", save: "Save", cancel: "Cancel", remove: "Delete", confirmRemove: "Delete this message?",
    branch: "Branch from here", regenerate: "Regenerate", continueReply: "Continue", answer: "Get a reply",
    stop: "Stop",
    interrupted: "Interrupted",
    modelSaw: "What the model saw", part: "Part", tokens: "Tokens", partSystem: "System",
    partCharacter: "Character",
    partPersona: "User persona", partLore: "Lore", partExamples: "Examples", partSummary: "Summary",
    partMemories: "Memories", memoriesUsed: "Memories in", pinnedMemory: "pinned",
    partHistory: "Conversation", partPostHistory: "Post-history instructions", partReserved: "Kept for the reply", loreFired: "Lore entries in", noneFired: "None",
    loreLeftOut: "Lore entries left out", loreEntry: "Entry", loreKey: "Key", lorePlace: "Place", loreReason: "Why",
    placeBeforeChar: "before the character", placeAfterChar: "after the character",
    placeDepth: "in the conversation, from the end",
    reasonDisabled: "disabled", reasonSecondaryKey: "secondary key missing", reasonBudget: "past the token budget",
    reasonBadRegex: "bad regex", reasonProbability: "its probability roll failed",
    reasonGroup: "another of its group went in", reasonDelayed: "no round of recursion came",
    examplesLeftOut: "Example blocks left out",
  },
};

const STORED = "playground.language";
// The visitor's last choice, else the browser's language.
let language = localStorage.getItem(STORED) || (navigator.language.startsWith("ko") ? "ko" : "en");

export const t = (key) => LABELS[language][key];

export function applyLabels() {
  document.documentElement.lang = language;
  for (const element of document.querySelectorAll("[data-i18n]")) {
    element.textContent = t(element.dataset.i18n);
  }
}

export function switchLanguage() {
  language = language === "ko" ? "en" : "ko";
  localStorage.setItem(STORED, language);
  applyLabels();
}
